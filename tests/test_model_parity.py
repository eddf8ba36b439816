"""Numerical parity with Hugging Face PyTorch on tiny random configs (fp32, CPU), via safetensors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxcult import load_pretrained  # noqa: E402
from jaxcult.models.decoder import KVCache  # noqa: E402
from jaxcult.models.layers import axes_of  # noqa: E402
from flax import nnx  # noqa: E402

ENCODER_KW = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
DECODER_KW = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def save_hf(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return path


def encoder_inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 99, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids = np.where(mask == 1, ids, 1)  # pad id 1 (RoBERTa family); BERT ignores padded keys
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    return ids, mask, types


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta"])
@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_encoder_parity(kind, act, tmp_path):
    torch.manual_seed(0)
    cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "xlm-roberta": transformers.XLMRobertaConfig}[kind]
    config = cls(**ENCODER_KW, hidden_act=act, pad_token_id=1 if kind != "bert" else 0)
    hf = transformers.AutoModel.from_config(config).eval()
    model, _ = load_pretrained(save_hf(hf, tmp_path))
    ids, mask, types = encoder_inputs()
    if kind == "bert":
        ids = np.where(mask == 1, ids, 0)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types))
    out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    valid = mask.astype(bool)
    diff = np.abs(np.asarray(out.last_hidden_state) - ref.last_hidden_state.numpy())[valid]
    assert diff.max() <= 1e-4
    np.testing.assert_allclose(np.asarray(out.pooler_output), ref.pooler_output.numpy(), atol=1e-4)


DECODERS = {
    "llama-theta1e5-untied": ("llama", dict(rope_theta=1e5, tie_word_embeddings=False)),
    "llama-tied": ("llama", dict(tie_word_embeddings=True)),
    "llama3-scaling": ("llama", dict(rope_theta=5e5, tie_word_embeddings=False, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "qwen2": ("qwen2", dict(tie_word_embeddings=False)),
    "mistral": ("mistral", dict(tie_word_embeddings=False, sliding_window=None)),
}


def make_decoder(name, tmp_path):
    torch.manual_seed(0)
    model_type, extra = DECODERS[name]
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "mistral": transformers.MistralConfig}[model_type]
    hf = transformers.AutoModelForCausalLM.from_config(cls(**DECODER_KW, **extra)).eval()
    if model_type == "qwen2":  # random init leaves biases at zero: make them matter
        with torch.no_grad():
            for layer in hf.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_()
    model, _ = load_pretrained(save_hf(hf, tmp_path))
    return hf, model


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_parity(name, tmp_path):
    hf, model = make_decoder(name, tmp_path)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 101, size=(2, 24))
    mask = np.ones_like(ids)
    mask[1, 18:] = 0  # right padding
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    out = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    valid = mask.astype(bool)
    assert np.abs(out - ref)[valid].max() <= 1e-4


@pytest.mark.parametrize("name", ["llama-theta1e5-untied", "qwen2"])
def test_kv_cache_matches_full_forward(name, tmp_path):
    _, model = make_decoder(name, tmp_path)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 101, size=(2, 12)))
    full = np.asarray(model(ids).logits)
    cache = KVCache.empty(model.config, batch=2, max_len=16)
    prefill = model(ids[:, :8], cache=cache)
    pieces = [np.asarray(prefill.logits)]
    cache = prefill.cache
    for t in range(8, 12):
        step = model(ids[:, t:t + 1], cache=cache)
        cache = step.cache
        pieces.append(np.asarray(step.logits))
    assert np.abs(np.concatenate(pieces, axis=1) - full).max() <= 1e-5


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_every_parameter_has_logical_axes(name, tmp_path):
    from jaxcult import models

    if name == "bert":
        config = models.EncoderConfig(**ENCODER_KW)
    else:
        config = models.DecoderConfig(**DECODER_KW, attention_bias=True)
    model = models.build(config)
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = axes_of(variable)
        assert axes is not None and len(axes) == variable.ndim, path
