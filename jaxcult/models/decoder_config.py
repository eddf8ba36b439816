"""What a causal-LM family decides, as one typed config.

The fields are the model's shape and numbers, named as in Hugging Face's `config.json`; the
class attributes are the family's structural choices, which a family's config subclass sets
(`jaxcult.models.gemma_family`, `qwen3_family`, `cohere_family`, `phi3_family`): how norms scale,
whether queries and keys are normalised per head, whether the block is sequential or parallel,
how rotary embeddings pair dimensions, whether projections are fused. `jaxcult.models.decoder`
reads only these, so a family is a config subclass, a key table and a registration.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax.numpy as jnp
from flax.core import FrozenDict

SLIDING, FULL = "sliding_attention", "full_attention"
ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """A decoder-only LM (Llama's choices unless a family's subclass says otherwise)."""

    vocab_size: int
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    attention_dropout: float = 0.0
    hidden_act: str = "silu"
    sliding_window: int | None = None          # attention span of sliding layers (tokens)
    layer_types: tuple[str, ...] | None = None  # per layer: sliding or full (None: all alike)
    partial_rotary_factor: float = 1.0         # share of each head's dimensions rotated
    pad_token_id: int | None = None            # special tokens, kept for config.json
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    model_type: str = "llama"
    dtype: str = "float32"
    param_dtype: str = "float32"

    norm: ClassVar[str] = "rms"                # rms: x̂·w; offset_rms: x̂·(1+w); layer: LayerNorm, no bias
    qk_norm: ClassVar[str | None] = None       # a norm of each query and key head (same kinds)
    sandwich_norms: ClassVar[bool] = False     # norms on the attention and MLP outputs too
    parallel_block: ClassVar[bool] = False     # attention and MLP both read the block's input
    rope_interleaved: ClassVar[bool] = False   # rotate pairs (x0, x1) rather than halves
    fused_projections: ClassVar[bool] = False  # one qkv_proj and one gate_up_proj
    scale_embeddings: ClassVar[bool] = False   # embeddings times sqrt(hidden_size)
    hf_names: ClassVar[dict[str, str]] = {}    # our field -> the family's config.json key

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if isinstance(self.rope_scaling, dict):  # hashable: the config is static in jitted code
            object.__setattr__(self, "rope_scaling", FrozenDict(
                {k: tuple(v) if isinstance(v, list) else v for k, v in self.rope_scaling.items()}))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if self.layer_types is not None:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
            if len(self.layer_types) != self.num_hidden_layers:
                raise ValueError(f"layer_types lists {len(self.layer_types)} layers, the model "
                                 f"has {self.num_hidden_layers}")
        for scaling in self.rope_choices():
            kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
            if kind not in ROPE_TYPES:
                raise ValueError(f"rope type {kind!r} is not supported (supported: "
                                 f"{', '.join(ROPE_TYPES)})")

    # -- the family's numbers, per layer ------------------------------------------------------
    def window(self, layer: int) -> int | None:
        """How many positions a query of `layer` sees back (itself included); None: all."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return self.sliding_window
        return self.sliding_window if self.layer_types[layer] == SLIDING else None

    def rope(self, layer: int) -> tuple[float, dict | None]:
        """(theta, scaling) of the rotary embedding of `layer`."""
        del layer
        return self.rope_theta, self.rope_scaling

    def rope_choices(self) -> list[dict | None]:
        return [self.rope(i)[1] for i in range(self.num_hidden_layers)] or [self.rope_scaling]

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def query_scale(self) -> float:
        return self.head_dim ** -0.5

    @property
    def attention_softcap(self) -> float | None:
        return None

    def output_logits(self, logits):
        """What the family does to the LM head's output (softcapping, a scale)."""
        return logits

    def embedding_scale(self, dtype) -> Any:
        """The factor embeddings are multiplied by (in the activation dtype, as HF rounds it)."""
        return jnp.asarray(math.sqrt(self.hidden_size), dtype) if self.scale_embeddings else None

    # -- Hugging Face's config.json ------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> DecoderConfig:
        merged = {**hf, **overrides}
        for ours, theirs in cls.hf_names.items():
            if theirs in merged and ours not in overrides:
                merged[ours] = merged.pop(theirs)
        if merged.get("model_type") == "qwen2" and "attention_bias" not in merged:
            merged["attention_bias"] = True  # Qwen2 always has q/k/v biases
        cls.read_rope(merged)
        if merged.get("use_sliding_window") is False:  # Qwen: the window only when switched on
            merged["sliding_window"] = None
        if merged.get("sliding_window") is not None and merged.get("layer_types") is None \
                and "max_window_layers" in merged:  # Qwen: sliding from max_window_layers up
            merged["layer_types"] = [SLIDING if i >= merged["max_window_layers"] else FULL
                                     for i in range(merged.get("num_hidden_layers", 32))]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in merged.items() if k in names})

    @classmethod
    def read_rope(cls, merged: dict[str, Any]) -> None:
        """`rope_parameters` (transformers 5) as `rope_theta` and `rope_scaling`."""
        params = merged.get("rope_parameters")
        if "rope_theta" not in merged and isinstance(params, dict) and "rope_theta" in params:
            merged["rope_theta"] = params["rope_theta"]
            if params.get("rope_type", "default") != "default":
                merged["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
            if "partial_rotary_factor" in params:
                merged.setdefault("partial_rotary_factor", params["partial_rotary_factor"])

    def to_hf(self) -> dict[str, Any]:
        """The config.json fields transformers reads for this model (family names)."""
        fields = dataclasses.asdict(self)
        for key in ("layer_types", "eos_token_id"):
            if isinstance(fields[key], tuple):
                fields[key] = list(fields[key])
        if fields["rope_scaling"] is not None:
            fields["rope_scaling"] = {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in fields["rope_scaling"].items()}
        if fields["sliding_window"] is not None:
            fields["use_sliding_window"] = True  # Qwen reads the window only with this switch
        return {self.hf_names.get(k, k): v for k, v in fields.items()}
