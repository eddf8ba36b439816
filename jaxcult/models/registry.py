"""The registry of model architectures: everything jaxcult knows about a family, in one place.

An `Architecture` names the HF `model_type`s it serves, its typed config and NNX module, and
the names its tensors have in foreign formats (the HF key table, GGUF tensor names, the class
names written into exported `config.json`, PEFT's task type, AdapterHub's key prefix). `hub/`
reads and writes files through these tables and never hard-codes a family. A new family is a
module that builds its `Architecture` and calls `register_architecture` (or a user import path
`mypkg.mod:ARCH` given as `model.architecture`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from jaxcult.errors import UserError
from jaxcult.models.keytable import KeyMap
from jaxcult.registry import Registry
from jaxcult.sharding import Rules, axes_of, named_sharding


@dataclass(frozen=True)
class Architecture:
    """One model family: how to build it and what its tensors are called elsewhere."""

    name: str
    kind: str                                   # "encoder" (bidirectional) or "decoder" (causal LM)
    model_types: tuple[str, ...]                # HF config.json `model_type` values served
    config_class: type                          # has `from_hf(dict, **overrides)`
    module_class: type                          # `module_class(config, rngs=nnx.Rngs)`
    keymap: KeyMap                              # HF tensor names <-> NNX paths
    hf_classes: Mapping[str, str]               # model_type -> `architectures` entry on export
    export_prefix: str = ""                     # prefix of base-model tensors in exported files
    gguf_architectures: Mapping[str, str] = field(default_factory=dict)  # GGUF arch -> model_type
    gguf_names: tuple[tuple[str, str], ...] = ()  # GGUF tensor name -> HF name ({i} = block)
    gguf_fields: Mapping[str, str] = field(default_factory=dict)  # GGUF key (after the
    #   architecture's prefix) -> config.json key, beyond the keys every family has
    gguf_permuted: tuple[str, ...] = ()         # GGUF architectures whose attn_q/attn_k rows
    #   llama.cpp's converter permuted for its rotary layout (its LlamaModel)
    gguf_norm_offset: float = 0.0               # llama.cpp stores norm weights plus this (Gemma)
    peft_task_type: str | None = None           # PEFT `task_type` of exported LoRA adapters
    adapterhub: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # model_type -> (AdapterHub key prefix, AdapterHub model class)
    dropout_settings: tuple[str, ...] = ()      # config fields `model.dropout` sets
    pooler_classifiers: tuple[str, ...] = ()    # model types whose transformers sequence-
    #   classification head reads the pretrained pooler (BERT); the others' is dense + tanh +
    #   linear on the first token (RoBERTa, XLM-R)

    def settings(self) -> list[str]:
        """The architecture's own settings: its config fields (`model.overrides` keys)."""
        return [f.name for f in dataclasses.fields(self.config_class)]

    def check_settings(self, keys: Collection[str], key: str) -> None:
        """Every key is a setting of this architecture, or a `UserError` naming it."""
        unknown = sorted(set(keys) - set(self.settings()))
        if unknown:
            raise UserError(f"{key}.{unknown[0]}: not a setting of the {self.name} architecture "
                            f"(its settings: {', '.join(self.settings())})")

    def config_from_hf(self, hf: dict[str, Any], **overrides: Any) -> Any:
        return self.config_class.from_hf(hf, **overrides)

    def build(self, config: Any, seed: int = 0) -> nnx.Module:
        return self.module_class(config, rngs=nnx.Rngs(seed))

    def hf_name(self, path: str) -> tuple[str, bool] | None:
        """(HF tensor name as transformers saves the full model, transpose?) of an NNX path."""
        found = self.keymap.to_hf(path)
        if found is None:
            return None
        name, transpose = found
        if self.export_prefix and not name.startswith("lm_head."):
            name = self.export_prefix + name
        return name, transpose


ARCHITECTURES: Registry[Architecture] = Registry(
    "architecture", check=lambda entry: isinstance(entry, Architecture))
_BY_MODEL_TYPE: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    ARCHITECTURES.add(architecture.name, architecture)
    for model_type in architecture.model_types:
        _BY_MODEL_TYPE[model_type] = architecture
    return architecture


def known_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def architecture_for(model_type: str | None, source: str = "model") -> Architecture:
    """The family serving an HF `model_type`; a clear error lists the supported ones."""
    if model_type not in _BY_MODEL_TYPE:
        raise UserError(f"{source}: unsupported model_type {model_type!r} (supported: "
                        f"{', '.join(known_model_types())})")
    return _BY_MODEL_TYPE[model_type]


def architecture_of(config: Any) -> Architecture:
    """The family of a built model's config (its `model_type`)."""
    return architecture_for(getattr(config, "model_type", None))


def config_from_hf(hf: dict[str, Any], source: str = "model", checked: Collection[str] = (),
                   dropout: float | None = None, **overrides: Any) -> Any:
    """Typed architecture config from an HF `config.json` dict; the `checked` overrides (the
    user's `model.overrides`) must be settings of the architecture, and `dropout` (the user's
    `model.dropout`) sets every dropout rate it has."""
    architecture = architecture_for(hf.get("model_type"), source)
    architecture.check_settings(checked, "model.overrides")
    if dropout is not None:
        if not architecture.dropout_settings:
            raise UserError(f"model.dropout: the {architecture.name} architecture has no dropout "
                            f"to set")
        overrides.update(dict.fromkeys(architecture.dropout_settings, dropout))
    try:
        return architecture.config_from_hf(hf, **overrides)
    except (ValueError, TypeError) as error:  # a config this family cannot be built from
        raise UserError(f"{source}: the {architecture.name} config cannot be used ({error})") \
            from None


def build(config: Any, seed: int = 0, *, mesh: Mesh | None = None,
          rules: Rules | None = None) -> nnx.Module:
    """A randomly initialised model of the given architecture config.

    With `mesh`, the initialisation runs as one jitted program whose outputs are laid out by
    each parameter's logical axes, so the model never exists whole on one device (JAX's
    partitionable threefry gives the same values as the unsharded initialisation).
    """
    architecture = architecture_of(config)
    if mesh is None:
        return architecture.build(config, seed)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: architecture.build(config, seed)))
    shardings = jax.tree.map(lambda v: named_sharding(axes_of(v), v.shape, rules or {}, mesh),
                             abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))
    state = jax.jit(lambda: nnx.state(architecture.build(config, seed)),
                    out_shardings=shardings)()
    return nnx.merge(graphdef, state)
