"""Phi-3 (and Phi-4-mini): the family's config, key table and registration.

Phi-3's choices over Llama's: fused projections, `qkv_proj` (queries, then keys, then values)
and `gate_up_proj` (gate, then up), kept fused as the checkpoint, PEFT and llama.cpp name them
(LoRA targets `qkv_proj`, `o_proj`, `gate_up_proj`, `down_proj`); a partial rotary embedding
(`partial_rotary_factor`); a sliding window over every layer when the config sets one.
The 128k-context variants' `longrope` scaling is not supported yet (refused at load).
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
class Phi3Config(DecoderConfig):
    rms_norm_eps: float = 1e-5
    model_type: str = "phi3"

    fused_projections: ClassVar[bool] = True


PHI3_FAMILY = register_architecture(Architecture(
    name="phi3",
    kind="decoder",
    model_types=("phi3",),
    config_class=Phi3Config,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules(LLAMA_NORMS, fused=True), prefixes=("model.",),
                  ignored=(r"rotary_emb\.",)),
    hf_classes={"phi3": "Phi3ForCausalLM"},
    export_prefix="model.",
    peft_task_type="CAUSAL_LM",
    gguf_architectures={"phi3": "phi3"},
    gguf_names=gguf_names(GGUF_NORMS, fused=True),
    gguf_fields={"attention.sliding_window": "sliding_window"},
))
