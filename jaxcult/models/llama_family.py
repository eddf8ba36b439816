"""Llama 2/3, Qwen2, Mistral (and SmolLM2): the decoder family's registration and foreign names.

Beside the registration: the HF key table, the GGUF (llama.cpp) tensor names and architecture
names, the class names written on export and PEFT's task type.
"""

from __future__ import annotations

from jaxcult.models.decoder import DECODER_TYPES, CausalLM
from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.keytable import KeyMap, decoder_rules, gguf_names
from jaxcult.models.registry import Architecture, register_architecture

LLAMA_NORMS = {"input_layernorm": "input_layernorm",
               "post_attention_layernorm": "post_attention_layernorm"}


GGUF_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


LLAMA_FAMILY = register_architecture(Architecture(
    name="llama",
    kind="decoder",
    model_types=DECODER_TYPES,
    config_class=DecoderConfig,
    module_class=CausalLM,
    keymap=KeyMap(rules=decoder_rules(LLAMA_NORMS), prefixes=("model.",),
                  ignored=(r"rotary_emb\.inv_freq$",)),
    hf_classes={"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "mistral": "MistralForCausalLM"},
    export_prefix="model.",
    gguf_architectures={"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"},
    gguf_names=gguf_names(GGUF_NORMS),
    gguf_permuted=("llama", "mistral"),
    peft_task_type="CAUSAL_LM",
))
