"""Llama 2/3, Qwen2, Mistral (and SmolLM2): the decoder family's registration and foreign names.

Beside the registration: the HF key table, the GGUF (llama.cpp) tensor names and architecture
names, the class names written on export and PEFT's task type.
"""

from __future__ import annotations

from jaxcult.models.decoder import DECODER_TYPES, CausalLM, DecoderConfig
from jaxcult.models.keytable import KeyMap, Rule, dense, norm
from jaxcult.models.registry import Architecture, register_architecture


def _rules() -> list[Rule]:
    layer = "layers.{i}"
    return [
        Rule("embed_tokens.weight", "embed_tokens.embedding"),
        *norm(f"{layer}.input_layernorm", "layers.{i}.input_layernorm", bias=False),
        *dense(f"{layer}.self_attn.q_proj", "layers.{i}.q_proj"),
        *dense(f"{layer}.self_attn.k_proj", "layers.{i}.k_proj"),
        *dense(f"{layer}.self_attn.v_proj", "layers.{i}.v_proj"),
        *dense(f"{layer}.self_attn.o_proj", "layers.{i}.o_proj"),
        *norm(f"{layer}.post_attention_layernorm", "layers.{i}.post_attention_layernorm", bias=False),
        *dense(f"{layer}.mlp.gate_proj", "layers.{i}.gate_proj", bias=False),
        *dense(f"{layer}.mlp.up_proj", "layers.{i}.up_proj", bias=False),
        *dense(f"{layer}.mlp.down_proj", "layers.{i}.down_proj", bias=False),
        *norm("norm", "norm", bias=False),
        Rule("lm_head.weight", "lm_head.kernel", transpose=True),
    ]


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
    keymap=KeyMap(rules=_rules(), prefixes=("model.",), ignored=(r"rotary_emb\.inv_freq$",)),
    hf_classes={"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "mistral": "MistralForCausalLM"},
    export_prefix="model.",
    gguf_architectures={"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"},
    gguf_names=GGUF_NAMES,
    peft_task_type="CAUSAL_LM",
))
