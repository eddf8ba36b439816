"""SQuAD v1.1-format extractive QA (SQuAD, XQuAD, MLQA) from local files, tokenised into
doc-stride windows.

A question whose context is longer than `max_length` becomes several overlapping windows
(`doc_stride` tokens of overlap, the question repeated in each). Training labels are the gold
answer's first/last token in a window, or position 0 (the CLS token) when the window does not
contain the whole answer. Each split keeps, for evaluation, which example every window came
from and the character offsets of its context tokens, so spans can be mapped back to text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxcult.config import DataConfig
from jaxcult.data.batching import Split
from jaxcult.data.registry import Dataset, DatasetInfo, decoded, register_dataset
from jaxcult.errors import UserError

XQUAD_LANGUAGES = ("en", "ar", "de", "el", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGUAGES = ("en", "ar", "de", "es", "hi", "vi", "zh")


def xquad_path(root: Path, language: str) -> Path:
    return root / "xquad" / f"xquad.{language}.json"


def mlqa_path(root: Path, language: str, split: str = "dev") -> Path:
    """MLQA's same-language file (`dev` or `test`) under the official archive layout."""
    name = f"{split}-context-{language}-question-{language}.json"
    for base in (root / "mlqa" / "data" / "mlqa" / "MLQA_V1", root / "mlqa" / "MLQA_V1",
                 root / "MLQA_V1"):
        if (base / split / name).is_file():
            return base / split / name
    return root / "mlqa" / "MLQA_V1" / split / name


def read_squad(path: Path) -> list[dict]:
    """Records `{id, question, context, answers: [text], starts: [int]}` in file order."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a SQuAD-format JSON file ({error})") from None
    records = []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise UserError(f"{where}: missing or non-text field 'context'")
            for q, qa in enumerate(paragraph.get("qas", [])):
                records.append(_record(qa, context, f"{where}.qas[{q}]"))
    if not records:
        raise UserError(f"{path}: no questions")
    return records


def _record(qa: dict, context: str, where: str) -> dict:
    for key in ("id", "question", "answers"):
        if key not in qa:
            raise UserError(f"{where}: missing field {key!r}")
    answers = qa["answers"]
    if not isinstance(answers, list) or not answers:
        raise UserError(f"{where}: 'answers' must be a non-empty list")
    texts, starts = [], []
    for answer in answers:
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int):
            raise UserError(f"{where}: each answer needs 'text' and an integer 'answer_start'")
        if context[start:start + len(text)] != text:
            raise UserError(f"{where}: answer {text!r} is not at character {start} of the context")
        texts.append(text)
        starts.append(start)
    return {"id": str(qa["id"]), "question": qa["question"], "context": context,
            "answers": texts, "starts": starts}


def check_context_room(records: list[dict], tokenizer, max_length: int, doc_stride: int,
                       name: str) -> None:
    """Each window repeats the question; the context's share must exceed the stride (the
    tokenizer panics otherwise). The longest question decides. Lengths are counted from the
    attention mask: on the streamed path the shared tokenizer was seen padding even these
    calls to the window length (padding state set by a concurrent windows call)."""
    masks = tokenizer([r["question"] for r in records], padding=False, truncation=False,
                      add_special_tokens=False, return_attention_mask=True)["attention_mask"]
    lengths = [int(sum(mask)) for mask in masks]
    worst = int(np.argmax(lengths))
    room = max_length - lengths[worst] - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= doc_stride:
        raise UserError(f"{name}: question {records[worst]['id']!r} takes {lengths[worst]} tokens, "
                        f"leaving {max(room, 0)} of model.max_length={max_length} for its context, "
                        f"which must exceed task.doc_stride={doc_stride}; raise model.max_length "
                        f"or lower task.doc_stride")


def tokenize_windows(records: list[dict], tokenizer, max_length: int, doc_stride: int,
                     name: str) -> Split:
    """Doc-stride windows of (question, context) pairs with span labels and decoding metadata."""
    if not records:
        raise UserError(f"{name}: split is empty")
    if doc_stride >= max_length // 2:
        raise UserError(f"task.doc_stride: {doc_stride} must be below half of model.max_length "
                        f"({max_length})")
    check_context_room(records, tokenizer, max_length, doc_stride, name)
    enc = tokenizer([r["question"] for r in records], [r["context"] for r in records],
                    truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int32)
    windows = len(example)
    labels = np.zeros((windows, 2), dtype=np.int32)
    offsets = np.full((windows, max_length, 2), -1, dtype=np.int32)
    for w in range(windows):
        sequence = enc.sequence_ids(w)
        record = records[example[w]]
        begin, end = record["starts"][0], record["starts"][0] + len(record["answers"][0])
        for t, (seq, (a, b)) in enumerate(zip(sequence, enc["offset_mapping"][w])):
            if seq == 1:
                offsets[w, t] = (a, b)
        context = [t for t, seq in enumerate(sequence) if seq == 1]
        if context and offsets[w, context[0], 0] <= begin and offsets[w, context[-1], 1] >= end:
            start = next(t for t in context if offsets[w, t, 1] > begin)
            stop = next(t for t in reversed(context) if offsets[w, t, 0] < end)
            labels[w] = (start, stop)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    types = np.asarray(enc["token_type_ids"], dtype=np.int32) if "token_type_ids" in enc \
        else np.zeros_like(ids)
    arrays = {"input_ids": ids, "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int32),
              "token_type_ids": types, "labels": labels}
    meta = {"example": example, "offsets": offsets, "records": records}
    return Split(arrays, name, meta)


class _SquadTrained(Dataset):
    """Trained on SQuAD v1.1 (`squad/{train,dev}-v1.1.json` or `data.train_file`), scored on
    another corpus's files per language."""

    languages: tuple[str, ...] = ()
    scoring = "squad"
    prepared = "jaxcult:squad"

    def info(self, config: DataConfig) -> DatasetInfo:
        return DatasetInfo("squad", self.languages, metadata={"qa_scoring": self.scoring})

    def read_train(self, config: DataConfig, language: str, split: str) -> list[dict]:
        name = "train-v1.1.json" if split == "train" else "dev-v1.1.json"
        return read_squad(self.local_root(config) / "squad" / name)

    def read_file(self, config: DataConfig, path: Path) -> list[dict]:
        return read_squad(path)

    def prepared_split(self, language: str, split: str, evaluation: bool = False) -> str:
        """SQuAD's `train` / `validation` train; the evaluation corpus is the builder's
        `<corpus>_<lang>` splits."""
        return self.evaluation_split(language, split) if evaluation else split

    def evaluation_split(self, language: str, split: str) -> str:
        raise NotImplementedError

    def from_prepared(self, example: dict, config: DataConfig) -> dict:
        answers = example["answers"]
        return {"id": decoded(example["id"]), "question": decoded(example["question"]),
                "context": decoded(example["context"]),
                "answers": [decoded(t) for t in answers["text"]],
                "starts": [int(s) for s in answers["answer_start"]]}


@register_dataset("xquad")
class XQuAD(_SquadTrained):
    """XQuAD (12 languages, one file each; scored with SQuAD v1.1 rules)."""

    languages = XQUAD_LANGUAGES

    def read_eval(self, config: DataConfig, language: str, split: str) -> list[dict]:
        return read_squad(xquad_path(self.local_root(config), language))

    def evaluation_split(self, language: str, split: str) -> str:
        return f"xquad_{language}"


@register_dataset("mlqa")
class MLQA(_SquadTrained):
    """MLQA (7 languages; `validation` = its dev files, `test` = its test files; MLQA's
    per-language answer normalisation)."""

    languages = MLQA_LANGUAGES
    scoring = "mlqa"

    def read_eval(self, config: DataConfig, language: str, split: str) -> list[dict]:
        name = "dev" if split == "validation" else "test"
        return read_squad(mlqa_path(self.local_root(config), language, name))

    def evaluation_split(self, language: str, split: str) -> str:
        return f"mlqa_{'dev' if split == 'validation' else 'test'}_{language}"
