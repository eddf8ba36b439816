"""From a config to the pieces a run needs: model split into groups, tokenizer, data splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxcult import models
from jaxcult.config import RunConfig
from jaxcult.data import copa, multilingual
from jaxcult.data.batching import Split, tokenize_classification
from jaxcult.errors import UserError
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.models.classifier import MultipleChoiceModel, SequenceClassifier
from jaxcult.peft.bottleneck import PLACEMENTS, add_bottleneck_adapters
from jaxcult.peft.groups import group_of, layer_index, ordered_groups
from jaxcult.peft.lora import add_lora


@dataclass
class ModelParts:
    graphdef: nnx.GraphDef
    params: dict[str, Any]      # group -> nnx.State, in `groups` order
    frozen: Any                 # nnx.State of the frozen backbone
    groups: list[str]
    layer_groups: list[str]     # bottom-up
    counts: dict[str, int]
    total_params: int


def _encoder_and_tokenizer(config: RunConfig):
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
    if not isinstance(encoder, models.Encoder):
        raise UserError(f"model.name: {config.model.name!r} is a causal LM; task "
                        f"{config.task.name!r} needs an encoder")
    return encoder, tokenizer


def build_model(config: RunConfig, num_labels: int) -> tuple[ModelParts, Any]:
    encoder, tokenizer = _encoder_and_tokenizer(config)
    if config.peft.kind in PLACEMENTS:
        add_bottleneck_adapters(encoder, config.peft, seed=config.trainer.seed)
    elif config.peft.kind == "lora":
        if config.peft.lora_dropout or config.peft.modules_to_save:
            raise UserError("peft.lora_dropout / peft.modules_to_save are not supported yet; "
                            "set lora_dropout: 0 and modules_to_save: []")
        add_lora(encoder, config.peft.target_modules, config.peft.lora_r, config.peft.lora_alpha,
                 seed=config.trainer.seed)
    elif config.peft.kind not in ("none", "full"):
        raise UserError(f"peft.kind: {config.peft.kind!r} is not available for the classification "
                        f"trainer yet (available: none, full, lora, {', '.join(PLACEMENTS)})")
    if config.task.name == "multiple_choice":
        model = MultipleChoiceModel(encoder, pooling=config.model.pooling, seed=config.trainer.seed)
    elif config.task.name in ("classification", "pair_classification"):
        model = SequenceClassifier(encoder, num_labels, pooling=config.model.pooling,
                                   seed=config.trainer.seed)
    else:
        raise UserError(f"task.name: {config.task.name!r} is not available in the trainer yet "
                        f"(available: classification, pair_classification, multiple_choice)")
    kind = config.peft.kind
    path_of = lambda path: ".".join(str(p) for p in path)  # noqa: E731
    names = {group_of(path_of(p), kind) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    groups = ordered_groups({n for n in names if n is not None})
    filters = [(lambda g: lambda path, _v: group_of(path_of(path), kind) == g)(g) for g in groups]
    graphdef, *states = nnx.split(model, *filters, ...)
    params = dict(zip(groups, states[:-1]))
    counts = {g: sum(int(np.prod(x.shape)) for x in nnx.to_flat_state(params[g]).leaves)
              for g in groups}
    total = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    layer_groups = [g for g in groups if layer_index(g) is not None]
    parts = ModelParts(graphdef, params, states[-1], groups, layer_groups, counts, total)
    return parts, tokenizer


@dataclass
class TaskData:
    train: Split
    validation: Split
    tests: dict[str, Split]   # language -> test split
    num_labels: int
    labels: tuple[str, ...]


def load_data(config: RunConfig, tokenizer) -> TaskData:
    """The configured dataset, tokenised: the built-in topic dataset or COPA/XCOPA files."""
    if config.data.name == multilingual.NAME:
        return _multilingual_data(config, tokenizer)
    if config.data.name == copa.NAME:
        return _xcopa_data(config, tokenizer)
    raise UserError(f"data.name: unknown dataset {config.data.name!r} (available: "
                    f"{multilingual.NAME}, {copa.NAME})")


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
