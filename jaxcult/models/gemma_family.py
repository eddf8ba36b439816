"""Gemma 2 and Gemma 3 (text): the family's config, key table and registration.

Gemma's choices over Llama's: RMSNorm scales stored as offsets from one, norms on the attention
and MLP outputs too (four per layer), embeddings times sqrt(hidden_size), GeGLU (tanh GELU),
queries scaled by `query_pre_attn_scalar`^-1/2, tied embeddings, sliding-window layers between
global ones. Gemma 2: attention- and final-logit soft-capping, every other layer sliding.
Gemma 3: per-head QK-norm instead of attention capping, five sliding layers per global one,
the sliding layers' own rotary base (`rope_local_base_freq`) and the global layers' scaling.
A multimodal Gemma 3 checkpoint (`gemma3`, `Gemma3ForConditionalGeneration`) loads its
language model: the text config, and the tensors under `language_model`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from jaxcult.models.decoder import CausalLM
from jaxcult.models.decoder_config import FULL, SLIDING, DecoderConfig
from jaxcult.models.keytable import KeyMap, decoder_rules, gguf_names
from jaxcult.models.registry import Architecture, register_architecture


@dataclasses.dataclass(frozen=True)
class Gemma2Config(DecoderConfig):
    hidden_act: str = "gelu_pytorch_tanh"
    tie_word_embeddings: bool = True
    query_pre_attn_scalar: float = 256.0
    attn_logit_softcapping: float | None = 50.0
    final_logit_softcapping: float | None = 30.0
    sliding_window: int | None = 4096
    model_type: str = "gemma2"

    norm: ClassVar[str] = "offset_rms"
    sandwich_norms: ClassVar[bool] = True
    scale_embeddings: ClassVar[bool] = True
    hf_names: ClassVar[dict[str, str]] = {"hidden_act": "hidden_activation"}
    sliding_every: ClassVar[int] = 2  # one global layer per this many (the last of each run)
    large_layers: ClassVar[int] = 46  # the 27B model's depth (see `from_hf`)

    @property
    def query_scale(self) -> float:
        return self.query_pre_attn_scalar ** -0.5

    @property
    def attention_softcap(self) -> float | None:
        return self.attn_logit_softcapping

    def output_logits(self, logits):
        cap = self.final_logit_softcapping
        return logits if cap is None else jnp.tanh(logits / cap) * cap

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> DecoderConfig:
        merged = {**hf, **overrides}
        if "query_pre_attn_scalar" not in merged:  # GGUF files lack it: llama.cpp's rule, the
            heads = merged.get("num_attention_heads", 8)  # 27B's hidden/heads, else head_dim
            merged["query_pre_attn_scalar"] = (
                merged["hidden_size"] // heads if merged.get("num_hidden_layers") == cls.large_layers
                else merged.get("head_dim") or merged["hidden_size"] // heads)
        if merged.get("layer_types") is None:
            every = merged.get("sliding_window_pattern", cls.sliding_every)
            merged["layer_types"] = [SLIDING if (i + 1) % every else FULL
                                     for i in range(merged.get("num_hidden_layers", 26))]
        return super().from_hf(merged)


@dataclasses.dataclass(frozen=True)
class Gemma3Config(Gemma2Config):
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    rope_theta: float = 1_000_000.0
    local_rope_theta: float = 10_000.0   # the sliding layers' rotary base
    model_type: str = "gemma3_text"

    qk_norm: ClassVar[str | None] = "offset_rms"
    hf_names: ClassVar[dict[str, str]] = {"hidden_act": "hidden_activation",
                                          "local_rope_theta": "rope_local_base_freq"}
    sliding_every: ClassVar[int] = 6
    large_layers: ClassVar[int] = 62

    def rope(self, layer: int) -> tuple[float, dict | None]:
        if self.layer_types is not None and self.layer_types[layer] == SLIDING:
            return self.local_rope_theta, None
        return self.rope_theta, self.rope_scaling

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> DecoderConfig:
        if hf.get("model_type") == "gemma3":  # multimodal: its language model's config
            hf = {**hf.get("text_config", {}), "model_type": "gemma3_text"}
        return super().from_hf(hf, **overrides)

    @classmethod
    def read_rope(cls, merged: dict[str, Any]) -> None:
        """transformers 5 keeps one rope dict per layer type."""
        params = merged.get("rope_parameters")
        if isinstance(params, dict) and FULL in params:
            full, local = params[FULL] or {}, params.get(SLIDING) or {}
            merged.setdefault("rope_theta", full.get("rope_theta", cls.rope_theta))
            merged.setdefault("rope_local_base_freq", local.get("rope_theta", cls.local_rope_theta))
            if full.get("rope_type", "default") != "default":
                merged["rope_scaling"] = {k: v for k, v in full.items() if k != "rope_theta"}
            merged["local_rope_theta"] = merged.pop("rope_local_base_freq")
            return
        if "rope_local_base_freq" in merged:
            merged["local_rope_theta"] = merged.pop("rope_local_base_freq")
        super().read_rope(merged)


GGUF_NORMS = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
              "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
GEMMA_NORMS = {"input_layernorm": "input_layernorm",
               "post_attention_layernorm": "attention_out_norm",
               "pre_feedforward_layernorm": "post_attention_layernorm",
               "post_feedforward_layernorm": "mlp_out_norm"}
_IGNORED = (r"rotary_emb\.", r"^vision_tower\.", r"^multi_modal_projector\.",
            r"^model\.vision_tower\.", r"^model\.multi_modal_projector\.")

GEMMA2_FAMILY = register_architecture(Architecture(
    name="gemma2",
    kind="decoder",
    model_types=("gemma2",),
    config_class=Gemma2Config,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules(GEMMA_NORMS), prefixes=("model.",), ignored=_IGNORED),
    hf_classes={"gemma2": "Gemma2ForCausalLM"},
    export_prefix="model.",
    peft_task_type="CAUSAL_LM",
    gguf_architectures={"gemma2": "gemma2"},
    gguf_names=gguf_names(GGUF_NORMS),
    gguf_fields={"attn_logit_softcapping": "attn_logit_softcapping",
                 "final_logit_softcapping": "final_logit_softcapping",
                 "attention.sliding_window": "sliding_window"},
    gguf_norm_offset=1.0,
))

GEMMA3_FAMILY = register_architecture(Architecture(
    name="gemma3",
    kind="decoder",
    model_types=("gemma3_text", "gemma3"),
    config_class=Gemma3Config,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules(GEMMA_NORMS, qk_norm=True),
                  prefixes=("language_model.model.", "model.language_model.", "model."),
                  ignored=_IGNORED),
    hf_classes={"gemma3_text": "Gemma3ForCausalLM", "gemma3": "Gemma3ForCausalLM"},
    export_prefix="model.",
    peft_task_type="CAUSAL_LM",
    gguf_architectures={"gemma3": "gemma3_text"},
    gguf_names=gguf_names(GGUF_NORMS, qk_norm=True),
    gguf_fields={"final_logit_softcapping": "final_logit_softcapping",
                 "attention.sliding_window": "sliding_window",
                 "rope.freq_base_swa": "rope_local_base_freq"},
    gguf_norm_offset=1.0,
))
