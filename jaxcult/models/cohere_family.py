"""Cohere (Command-R, Aya Expanse): the family's config, key table and registration.

Cohere's choices over Llama's: a parallel block (attention and MLP both read one normed input
and are added to it together), LayerNorm without bias (mean-subtracted, `layer_norm_eps`),
rotary embeddings on interleaved pairs, tied embeddings, the logits scaled by `logit_scale`,
and with `use_qk_norm` (Command-R+) a LayerNorm of each query and key head with a scale per
head.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jaxcult.models.decoder import CausalLM
from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.keytable import KeyMap, decoder_rules, gguf_names
from jaxcult.models.registry import Architecture, register_architecture


@dataclasses.dataclass(frozen=True)
class CohereConfig(DecoderConfig):
    rms_norm_eps: float = 1e-5          # config.json's layer_norm_eps
    tie_word_embeddings: bool = True
    logit_scale: float = 0.0625
    use_qk_norm: bool = False
    model_type: str = "cohere"

    norm: ClassVar[str] = "layer"
    parallel_block: ClassVar[bool] = True
    rope_interleaved: ClassVar[bool] = True
    hf_names: ClassVar[dict[str, str]] = {"rms_norm_eps": "layer_norm_eps"}

    @property
    def qk_norm(self) -> str | None:  # type: ignore[override]
        return "layer" if self.use_qk_norm else None

    def output_logits(self, logits):
        return logits * self.logit_scale


COHERE_FAMILY = register_architecture(Architecture(
    name="cohere",
    kind="decoder",
    model_types=("cohere",),
    config_class=CohereConfig,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules({"input_layernorm": "input_layernorm"}, qk_norm=True),
                  prefixes=("model.",), ignored=(r"rotary_emb\.inv_freq$",)),
    hf_classes={"cohere": "CohereForCausalLM"},
    export_prefix="model.",
    peft_task_type="CAUSAL_LM",
    gguf_architectures={"command-r": "cohere"},
    gguf_names=gguf_names({"attn_norm": "input_layernorm"}, qk_norm=True),
    gguf_fields={"logit_scale": "logit_scale"},
))
