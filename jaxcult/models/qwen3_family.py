"""Qwen3: the family's config, key table and registration.

Qwen3's choices over Llama's: an RMSNorm over each query and key head (before the rotary
embedding), no attention biases, an explicit head_dim; a sliding window only when
`use_sliding_window` is set (from layer `max_window_layers` up). Its chat template (with the
thinking tags) comes with the tokenizer and renders as transformers renders it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxcult.models.decoder import CausalLM
from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.keytable import KeyMap, decoder_rules, gguf_names
from jaxcult.models.llama_family import GGUF_NORMS, LLAMA_NORMS
from jaxcult.models.registry import Architecture, register_architecture


@dataclasses.dataclass(frozen=True)
class Qwen3Config(DecoderConfig):
    rope_theta: float = 1_000_000.0
    model_type: str = "qwen3"

    qk_norm: ClassVar[str | None] = "rms"


QWEN3_FAMILY = register_architecture(Architecture(
    name="qwen3",
    kind="decoder",
    model_types=("qwen3",),
    config_class=Qwen3Config,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules(LLAMA_NORMS, qk_norm=True), prefixes=("model.",),
                  ignored=(r"rotary_emb\.inv_freq$",)),
    hf_classes={"qwen3": "Qwen3ForCausalLM"},
    export_prefix="model.",
    peft_task_type="CAUSAL_LM",
    gguf_architectures={"qwen3": "qwen3"},
    gguf_names=gguf_names(GGUF_NORMS, qk_norm=True),
))
