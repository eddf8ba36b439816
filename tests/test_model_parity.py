"""Numerical parity with Hugging Face PyTorch on tiny random configs (fp32, CPU), via safetensors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import nnx  # noqa: E402

from jaxcult import load_pretrained  # noqa: E402
from jaxcult.models.decoder import KVCache  # noqa: E402
from jaxcult.sharding import axes_of  # noqa: E402

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


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta", "llama-tied", "qwen2"])
def test_save_pretrained_round_trips_through_transformers(kind, tmp_path):
    from jaxcult.hub.export import save_pretrained

    if kind in ("bert", "xlm-roberta"):
        cls = transformers.BertConfig if kind == "bert" else transformers.XLMRobertaConfig
        torch.manual_seed(0)
        hf = transformers.AutoModel.from_config(cls(**ENCODER_KW, pad_token_id=1)).eval()
        model, _ = load_pretrained(save_hf(hf, tmp_path / "in"))
        save_pretrained(model, tmp_path / "out")
        back = transformers.AutoModel.from_pretrained(tmp_path / "out").eval()
        ids, mask, types = encoder_inputs()
        args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types))
        with torch.no_grad():
            a, b = hf(**args).last_hidden_state, back(**args).last_hidden_state
    else:
        hf, model = make_decoder(kind, tmp_path / "in")
        save_pretrained(model, tmp_path / "out")
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
        ids = torch.tensor(np.random.default_rng(3).integers(0, 101, size=(2, 10)))
        with torch.no_grad():
            a, b = hf(input_ids=ids).logits, back(input_ids=ids).logits
    assert np.abs(a.numpy() - b.numpy()).max() <= 1e-5


def test_bad_checkpoints_give_one_clear_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    from jaxcult.errors import UserError

    torch.manual_seed(0)
    hf = transformers.AutoModel.from_config(transformers.BertConfig(**ENCODER_KW)).eval()
    good = save_hf(hf, tmp_path / "good")
    tensors = load_file(good / "model.safetensors")
    cases = {}
    for name, change in {
        "missing": lambda t: t.pop("encoder.layer.1.output.dense.weight"),
        "shape": lambda t: t.__setitem__("pooler.dense.bias", np.zeros(3, np.float32)),
        "unexpected": lambda t: t.__setitem__("encoder.layer.0.extra.weight", np.zeros(2, np.float32)),
    }.items():
        bad = tmp_path / name
        bad.mkdir()
        (bad / "config.json").write_text((good / "config.json").read_text())
        copy = dict(tensors)
        change(copy)
        save_file(copy, str(bad / "model.safetensors"))
        cases[name] = bad
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((good / "config.json").read_text())
    data = (good / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = truncated
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text('{"model_type": "t5"}')
    cases["model_type"] = unknown
    expected = {"missing": "layers.1.output.kernel",
                "shape": "pooler.bias", "unexpected": "encoder.layer.0.extra.weight",
                "truncated": "unreadable safetensors", "model_type": "t5"}
    for name, path in cases.items():
        with pytest.raises(UserError) as err:
            load_pretrained(path)
        assert expected[name] in str(err.value), (name, str(err.value))
        assert "\n" not in str(err.value)
