"""From a config to the model a run trains: backbone, PEFT modules, task head, parameter groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flax import nnx

from jaxcult import models
from jaxcult.config import RunConfig
from jaxcult.errors import UserError
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.models.classifier import MultipleChoiceModel, SequenceClassifier, SpanExtractor
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
    if config.task.name == "extractive_qa":
        return SpanExtractor(backbone, seed=seed)
    raise UserError(f"task.name: {config.task.name!r} is not available in the trainer yet "
                    f"(available: classification, pair_classification, multiple_choice, causal_lm, "
                    f"extractive_qa)")


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
