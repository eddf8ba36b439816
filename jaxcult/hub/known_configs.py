"""The `config.json` fields of the architectures the shipped paper configs name, so that a plan
(`jaxcult plan`, `--dry-run`) of a Hub model needs neither its weights nor a download.

Only the fields that shape the model are kept (sizes, heads, vocabulary, rotary settings,
tying); the values are those of each model's published config.json. A local HF directory or a
downloaded snapshot always takes precedence over this table.
"""

from __future__ import annotations

from typing import Any

_LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
_LLAMA = {"model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 128256,
          "rope_theta": 500000.0, "max_position_embeddings": 131072, "attention_bias": False,
          "bos_token_id": 128000}
_QWEN2 = {"model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
          "max_position_embeddings": 32768, "vocab_size": 151936}
_XLMR = {"model_type": "xlm-roberta", "hidden_act": "gelu", "vocab_size": 250002,
         "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
         "pad_token_id": 1, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}

KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B-Instruct": {
        **_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False,
        "rope_scaling": {**_LLAMA3_ROPE, "factor": 8.0}},
    "meta-llama/Llama-3.2-1B-Instruct": {
        **_LLAMA, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "tie_word_embeddings": True, "rope_scaling": {**_LLAMA3_ROPE, "factor": 32.0}},
    "meta-llama/Llama-3.2-3B-Instruct": {
        **_LLAMA, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
        "tie_word_embeddings": True, "rope_scaling": {**_LLAMA3_ROPE, "factor": 32.0}},
    "Qwen/Qwen2.5-0.5B-Instruct": {
        **_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "Qwen/Qwen2.5-1.5B-Instruct": {
        **_QWEN2, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "Qwen/Qwen2.5-7B-Instruct": {
        **_QWEN2, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 32768, "tie_word_embeddings": False},
    "mistralai/Mistral-7B-Instruct-v0.3": {
        "model_type": "mistral", "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": 32768,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "sliding_window": None, "tie_word_embeddings": False},
    "FacebookAI/xlm-roberta-base": {
        **_XLMR, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12},
    "FacebookAI/xlm-roberta-large": {
        **_XLMR, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16},
    "google-bert/bert-base-multilingual-cased": {
        "model_type": "bert", "hidden_act": "gelu", "vocab_size": 119547, "hidden_size": 768,
        "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
}
# the base models and the short names Hugging Face still redirects
KNOWN_CONFIGS.update({
    "meta-llama/Llama-3.1-8B": KNOWN_CONFIGS["meta-llama/Llama-3.1-8B-Instruct"],
    "mistralai/Mistral-7B-v0.3": KNOWN_CONFIGS["mistralai/Mistral-7B-Instruct-v0.3"],
    "xlm-roberta-base": KNOWN_CONFIGS["FacebookAI/xlm-roberta-base"],
    "xlm-roberta-large": KNOWN_CONFIGS["FacebookAI/xlm-roberta-large"],
    "bert-base-multilingual-cased": KNOWN_CONFIGS["google-bert/bert-base-multilingual-cased"],
})


def known_config(name: str) -> dict[str, Any] | None:
    """The config.json fields of a model named in the table (a copy), or None."""
    found = KNOWN_CONFIGS.get(name)
    return None if found is None else {**found, "_name_or_path": name}
