"""From a config to the pieces a run needs: model split into groups, tokenizer, data splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxcult import models
from jaxcult.config import RunConfig
from jaxcult.data import copa, lm, multilingual
from jaxcult.data.batching import Split, tokenize_classification
from jaxcult.errors import UserError
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.models.classifier import MultipleChoiceModel, SequenceClassifier
from jaxcult.peft.bottleneck import PLACEMENTS, add_bottleneck_adapters
from jaxcult.peft.groups import group_of, layer_index, ordered_groups
from jaxcult.peft.lora import add_lora, saved_modules
from jaxcult.peft.madx import read_language_adapters, stack_source_adapter


@dataclass
class ModelParts:
    graphdef: nnx.GraphDef
    params: dict[str, Any]      # group -> nnx.State, in `groups` order
    frozen: Any                 # nnx.State of the frozen backbone
    groups: list[str]
    layer_groups: list[str]     # bottom-up
    counts: dict[str, int]
    total_params: int
    language_hubs: dict = field(default_factory=dict)  # MAD-X: language -> HubAdapter


def _backbone_and_tokenizer(config: RunConfig):
    """The pretrained (or random) encoder or causal LM, and its tokenizer."""
    overrides = {"dtype": config.model.compute_dtype, "param_dtype": config.model.dtype}
    if config.model.dropout is not None:
        overrides.update(hidden_dropout_prob=config.model.dropout,
                         attention_probs_dropout_prob=config.model.dropout)
    if config.model.name == "random":
        arch = dict(config.model.overrides)
        if "model_type" not in arch or "vocab_size" not in arch:
            raise UserError("model.overrides: a `random` model needs at least model_type and vocab_size")
        try:
            encoder = models.build(models.config_from_hf({**arch, **overrides}), seed=config.trainer.seed)
        except KeyError:
            raise UserError(f"model.overrides.model_type: unsupported {arch['model_type']!r}") from None
        tokenizer = None
    else:
        encoder, tokenizer = load_pretrained(config.model.name,
                                             **{**dict(config.model.overrides), **overrides})
    if config.model.tokenizer is not None:
        _, tokenizer = load_pretrained(config.model.tokenizer)
    if tokenizer is None:
        raise UserError(f"model.tokenizer: {config.model.name!r} has no tokenizer; name an asset "
                        f"or HF directory that has one")
    if len(tokenizer) > encoder.config.vocab_size:
        raise UserError(f"model.tokenizer: the tokenizer has {len(tokenizer)} tokens but the model's "
                        f"vocabulary has only {encoder.config.vocab_size} rows")
    is_lm = config.task.name == "causal_lm"
    if is_lm != isinstance(encoder, models.CausalLM):
        kind = "a causal LM" if isinstance(encoder, models.CausalLM) else "an encoder"
        raise UserError(f"model.name: {config.model.name!r} is {kind}; task {config.task.name!r} "
                        f"needs {'a causal LM' if is_lm else 'an encoder'}")
    return encoder, tokenizer


def _add_peft(backbone: nnx.Module, config: RunConfig) -> tuple[tuple[str, ...], dict]:
    """Insert the configured PEFT modules; returns the paths of modules trained in full and the
    MAD-X language adapters (language -> AdapterHub adapter; empty without MAD-X)."""
    peft, seed = config.peft, config.trainer.seed
    hubs = {}
    if peft.language_adapters:
        if peft.kind not in ("pfeiffer", "houlsby"):
            raise UserError(f"peft.language_adapters: MAD-X stacks language adapters under "
                            f"pfeiffer or houlsby task adapters, not peft.kind={peft.kind!r}")
        hubs = read_language_adapters(peft.language_adapters, config.data.source_language)
    if peft.kind in PLACEMENTS:
        add_bottleneck_adapters(backbone, peft, seed=seed)
        if hubs:
            stack_source_adapter(backbone, hubs, config.data.source_language, seed=seed)
    elif peft.kind == "lora":
        add_lora(backbone, peft.target_modules, peft.lora_r, peft.lora_alpha, seed=seed,
                 dropout=peft.lora_dropout)
    elif peft.kind not in ("none", "full"):
        raise UserError(f"peft.kind: {peft.kind!r} is not available yet (available: none, full, "
                        f"lora, {', '.join(PLACEMENTS)})")
    if peft.modules_to_save and peft.kind != "lora":
        raise UserError("peft.modules_to_save: only used with peft.kind=lora (full fine-tuning "
                        "trains every module already)")
    return saved_modules(backbone, peft.modules_to_save), hubs


def _task_model(backbone: nnx.Module, config: RunConfig, num_labels: int) -> nnx.Module:
    seed, pooling = config.trainer.seed, config.model.pooling
    if config.task.name == "multiple_choice":
        return MultipleChoiceModel(backbone, pooling=pooling, seed=seed)
    if config.task.name in ("classification", "pair_classification"):
        return SequenceClassifier(backbone, num_labels, pooling=pooling, seed=seed)
    if config.task.name == "causal_lm":
        return backbone
    raise UserError(f"task.name: {config.task.name!r} is not available in the trainer yet "
                    f"(available: classification, pair_classification, multiple_choice, causal_lm)")


def _path(path) -> str:
    return ".".join(str(p) for p in path)


def build_model(config: RunConfig, num_labels: int) -> tuple[ModelParts, Any]:
    backbone, tokenizer = _backbone_and_tokenizer(config)
    saved, language_hubs = _add_peft(backbone, config)
    model = _task_model(backbone, config, num_labels)
    if model is not backbone:  # paths inside the task model are prefixed with `encoder.`
        saved = tuple(f"encoder.{p}" for p in saved)
    kind = config.peft.kind
    names = {group_of(_path(p), kind, saved)
             for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    groups = ordered_groups({n for n in names if n is not None})
    filters = [(lambda g: lambda path, _v: group_of(_path(path), kind, saved) == g)(g)
               for g in groups]
    graphdef, *states = nnx.split(model, *filters, ...)
    params = dict(zip(groups, states[:-1]))
    counts = {g: sum(int(np.prod(x.shape)) for x in nnx.to_flat_state(params[g]).leaves)
              for g in groups}
    total = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    # bottom-up; full fine-tuning's embeddings sit below layer 0 (gradual unfreezing ends there)
    layer_groups = [g for g in groups if g == "embeddings"] + \
        [g for g in groups if layer_index(g) is not None]
    parts = ModelParts(graphdef, params, states[-1], groups, layer_groups, counts, total,
                       language_hubs)
    return parts, tokenizer


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
    raise UserError(f"data.name: unknown dataset {config.data.name!r} (available: "
                    f"{multilingual.NAME}, {copa.NAME}, {lm.CHAT_NAME})")


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
