"""Llama 2/3, Qwen2, Mistral (and SmolLM2): the decoder family's registration and foreign names.

Beside the registration: the HF key table, the GGUF (llama.cpp) tensor names and architecture
names, the class names written on export and PEFT's task type.
"""

from __future__ import annotations

from jaxcult.models.decoder import DECODER_TYPES, CausalLM
from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.keytable import KeyMap, decoder_rules
from jaxcult.models.registry import Architecture, register_architecture

LLAMA_NORMS = {"input_layernorm": "input_layernorm",
               "post_attention_layernorm": "post_attention_layernorm"}


GGUF_NAMES = (  # llama.cpp tensor name -> HF name ({i} = block index)
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias"),
    ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias"),
    ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias"),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
)

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
    gguf_names=GGUF_NAMES,
    peft_task_type="CAUSAL_LM",
))
