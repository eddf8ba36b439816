"""The configured dataset as tokenised splits: training, validation, and one test split per
language (source first). Each dataset is read from local files (`data.manual_dir`) or generated
(the built-in multilingual dataset); errors name the file and record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxcult.config import RunConfig
from jaxcult.data import copa, lm, multilingual, pairs, squad
from jaxcult.data.batching import Split, tokenize_classification
from jaxcult.errors import UserError

NUM_LABELS = {multilingual.NAME: len(multilingual.LABELS), copa.NAME: 2, "pawsx": 2, "xnli": 3}
QA_DATASETS = ("xquad", "mlqa")


def num_labels(config: RunConfig) -> int:
    """Classes of the configured dataset (task.num_labels when it is set)."""
    return config.task.num_labels or NUM_LABELS.get(config.data.name, 2)


@dataclass
class TaskData:
    train: Split
    validation: Split
    tests: dict[str, Split]   # language -> test split
    num_labels: int
    labels: tuple[str, ...]


def load_data(config: RunConfig, tokenizer) -> TaskData:
    """The configured dataset, tokenised for the task."""
    if config.data.name == multilingual.NAME:
        if config.task.name == "causal_lm":
            return _multilingual_lm_data(config, tokenizer)
        return _multilingual_data(config, tokenizer)
    if config.data.name == copa.NAME:
        return _xcopa_data(config, tokenizer)
    if config.data.name == lm.CHAT_NAME:
        return _chat_data(config, tokenizer)
    if config.data.name in ("pawsx", "xnli"):
        return _pair_data(config, tokenizer)
    if config.data.name in QA_DATASETS:
        return _qa_data(config, tokenizer)
    raise UserError(f"data.name: unknown dataset {config.data.name!r} (available: "
                    f"{multilingual.NAME}, {copa.NAME}, pawsx, xnli, xquad, mlqa, {lm.CHAT_NAME})")


def _languages(config: RunConfig, available) -> list[str]:
    src = config.data.source_language
    targets = config.data.target_languages or list(available)
    return [src] + [t for t in targets if t != src]


def _xcopa_data(config: RunConfig, tokenizer) -> TaskData:
    if config.task.name != "multiple_choice":
        raise UserError(f"task.name: {copa.NAME} is a multiple-choice dataset; set "
                        f"task.name=multiple_choice (found {config.task.name!r})")
    if config.data.manual_dir is None:
        raise UserError(f"data.manual_dir: {copa.NAME} reads local files; point it at the folder "
                        f"holding copa/ and xcopa/")
    root = Path(config.data.manual_dir).expanduser()
    length, limit = config.model.max_length, config.data.max_eval_examples

    def split(language: str, name: str, cap: int | None) -> Split:
        records = copa.read_split(root, language, name)[:cap]
        return copa.tokenize_choices(records, tokenizer, length, f"{copa.NAME}/{language}/{name}")

    src = config.data.source_language
    train = split(src, "train", config.data.max_train_examples)
    validation = split(src, "validation", limit)
    tests = {lang: split(lang, "test", limit)
             for lang in _languages(config, copa.XCOPA_LANGUAGES)}
    return TaskData(train, validation, tests, 2, ("choice1", "choice2"))


def _multilingual_data(config: RunConfig, tokenizer) -> TaskData:
    src = config.data.source_language
    num_labels = len(multilingual.LABELS)
    if config.task.num_labels not in (None, num_labels):
        raise UserError(f"task.num_labels: {multilingual.NAME} has {num_labels} labels, "
                        f"config says {config.task.num_labels}")
    length = config.model.max_length

    def split(language: str, name: str, limit: int | None) -> Split:
        examples = multilingual.generate(language, name)[:limit]
        return tokenize_classification(examples, tokenizer, length, f"{multilingual.NAME}/"
                                       f"{language}/{name}", num_labels)

    train = split(src, "train", config.data.max_train_examples)
    validation = split(src, "validation", config.data.max_eval_examples)
    tests = {lang: split(lang, "test", config.data.max_eval_examples)
             for lang in _languages(config, multilingual.LANGUAGES)}
    return TaskData(train, validation, tests, num_labels, multilingual.LABELS)


def _multilingual_lm_data(config: RunConfig, tokenizer) -> TaskData:
    """Language modelling of the built-in dataset's sentences (perplexity per language)."""
    def split(language: str, name: str, limit: int | None) -> Split:
        texts = [e["text"] for e in multilingual.generate(language, name)[:limit]]
        return lm.tokenize_texts(texts, tokenizer, config.model.max_length,
                                 f"{multilingual.NAME}/{language}/{name}")

    src = config.data.source_language
    return TaskData(split(src, "train", config.data.max_train_examples),
                    split(src, "validation", config.data.max_eval_examples),
                    {lang: split(lang, "test", config.data.max_eval_examples)
                     for lang in _languages(config, multilingual.LANGUAGES)}, 0, ())


def _chat_data(config: RunConfig, tokenizer) -> TaskData:
    """`manual_dir/{train,validation,test}.jsonl`; test records grouped by their `language`."""
    if config.task.name != "causal_lm":
        raise UserError(f"task.name: {lm.CHAT_NAME} is chat data; set task.name=causal_lm")
    if config.data.manual_dir is None:
        raise UserError(f"data.manual_dir: {lm.CHAT_NAME} reads train.jsonl, validation.jsonl "
                        f"and test.jsonl from a local folder; set its path")
    root = Path(config.data.manual_dir).expanduser()
    src, length = config.data.source_language, config.model.max_length

    def split(records: list[dict], name: str, cap: int | None) -> Split:
        return lm.tokenize_chats(records[:cap], tokenizer, length, f"{root / name}")

    by_language: dict[str, list[dict]] = {}
    for record in lm.read_chat_jsonl(root / "test.jsonl"):
        by_language.setdefault(record.get("language", src), []).append(record)
    wanted = _languages(config, by_language)
    missing = [lang for lang in wanted if lang not in by_language]
    if missing:
        raise UserError(f"{root / 'test.jsonl'}: no records for language(s) {', '.join(missing)}")
    cap = config.data.max_eval_examples
    return TaskData(split(lm.read_chat_jsonl(root / "train.jsonl"), "train.jsonl",
                          config.data.max_train_examples),
                    split(lm.read_chat_jsonl(root / "validation.jsonl"), "validation.jsonl", cap),
                    {lang: split(by_language[lang], f"test.jsonl[{lang}]", cap) for lang in wanted},
                    0, ())


def _local_root(config: RunConfig) -> Path:
    if config.data.manual_dir is None:
        raise UserError(f"data.manual_dir: {config.data.name} reads local files; set the folder "
                        f"that holds them")
    return Path(config.data.manual_dir).expanduser()


def _require_task(config: RunConfig, *tasks: str) -> None:
    if config.task.name not in tasks:
        raise UserError(f"task.name: {config.data.name} needs task.name={' or '.join(tasks)} "
                        f"(found {config.task.name!r})")


def _train_file(config: RunConfig) -> Path:
    """data.train_file; a relative path is read from data.manual_dir (when it is set)."""
    path = Path(config.data.train_file).expanduser()
    if not path.is_absolute() and config.data.manual_dir is not None:
        path = Path(config.data.manual_dir).expanduser() / path
    return path


def _held_out(records: list, fraction: float = 0.05) -> tuple[list, list]:
    """(train, validation) from one list: the last `fraction` (at least one) is held out."""
    cut = len(records) - max(1, int(len(records) * fraction))
    if cut < 1:
        raise UserError("data.train_file: too few records to hold out a validation part")
    return records[:cut], records[cut:]


def _pair_data(config: RunConfig, tokenizer) -> TaskData:
    """PAWS-X / XNLI: train on the source language (XNLI: MNLI), score every target language."""
    _require_task(config, "pair_classification", "classification")
    root, src = _local_root(config), config.data.source_language
    read = pairs.read_pawsx if config.data.name == "pawsx" else pairs.read_xnli
    languages = pairs.PAWSX_LANGUAGES if config.data.name == "pawsx" else pairs.XNLI_LANGUAGES
    names = pairs.PAWSX_LABELS if config.data.name == "pawsx" else pairs.NLI_LABELS
    cap, length, n = config.data.max_eval_examples, config.model.max_length, len(names)

    def split(examples: list[dict], name: str, limit: int | None) -> Split:
        return tokenize_classification(examples[:limit], tokenizer, length,
                                       f"{config.data.name}/{name}", n)

    if config.data.train_file:
        train, validation = _held_out(pairs.read_tsv(_train_file(config), names))
    else:
        train, validation = read(root, src, "train"), read(root, src, "validation")
    tests = {lang: split(read(root, lang, config.data.eval_split), f"{lang}/{config.data.eval_split}", cap)
             for lang in _languages(config, languages)}
    return TaskData(split(train, f"{src}/train", config.data.max_train_examples),
                    split(validation, f"{src}/validation", cap), tests, n, names)


def _qa_data(config: RunConfig, tokenizer) -> TaskData:
    """SQuAD v1.1 training (or data.train_file), XQuAD / MLQA scoring per language."""
    _require_task(config, "extractive_qa")
    root, src = _local_root(config), config.data.source_language
    length, stride = config.model.max_length, config.task.doc_stride
    if config.data.train_file:
        train, validation = _held_out(squad.read_squad(_train_file(config)))
    else:
        train = squad.read_squad(root / "squad" / "train-v1.1.json")
        validation = squad.read_squad(root / "squad" / "dev-v1.1.json")
    if config.data.name == "xquad":
        languages, path_of = squad.XQUAD_LANGUAGES, lambda lang: squad.xquad_path(root, lang)
    else:
        split_name = "dev" if config.data.eval_split == "validation" else "test"
        languages = squad.MLQA_LANGUAGES
        path_of = lambda lang: squad.mlqa_path(root, lang, split_name)  # noqa: E731
    cap = config.data.max_eval_examples

    def windows(records: list[dict], name: str, limit: int | None, lang: str | None) -> Split:
        split = squad.tokenize_windows(records[:limit], tokenizer, length, stride,
                                       f"{config.data.name}/{name}")
        split.meta["score_language"] = lang if config.data.name == "mlqa" else None
        return split

    tests = {}
    for lang in _languages(config, languages):
        if lang not in languages:
            raise UserError(f"data.target_languages: {config.data.name} has no language {lang!r} "
                            f"(available: {', '.join(languages)})")
        tests[lang] = windows(squad.read_squad(path_of(lang)), lang, cap, lang)
    return TaskData(windows(train, f"{src}/train", config.data.max_train_examples, src),
                    windows(validation, f"{src}/validation", cap, src), tests, 2, ("start", "end"))
