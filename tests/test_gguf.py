"""GGUF loading: tiny files written here (several quantizations) vs transformers' GGUF loader."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxcult import load_pretrained  # noqa: E402
from jaxcult.errors import UserError  # noqa: E402
from jaxcult.hub.gguf_io import permute_rows, unpermute_rows  # noqa: E402

Q = gguf.GGMLQuantizationType
HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
         "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
         "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_name(name):
    if name in HF_TO_GGUF:
        return HF_TO_GGUF[name]
    parts = name.split(".")
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def write_tiny_gguf(path, qtype, *, tied=False):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, rope_theta=1e5,
                                      tie_word_embeddings=tied, max_position_embeddings=128)
    hf = transformers.LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(96)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(1e5)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(64)
    writer.add_rope_dimension_count(16)
    for name, tensor in hf.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        data = tensor.numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            data = permute_rows(data, 4)
        elif name.endswith("k_proj.weight"):
            data = permute_rows(data, 2)
        kind = qtype if data.ndim == 2 else Q.F32
        if kind == Q.F16:
            writer.add_tensor(gguf_name(name), data.astype(np.float16))
        elif kind == Q.F32:
            writer.add_tensor(gguf_name(name), data)
        else:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_permutation_round_trip():
    w = np.arange(48 * 3, dtype=np.float32).reshape(48, 3)
    assert np.array_equal(unpermute_rows(permute_rows(w, 3), 3), w)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1])
@pytest.mark.parametrize("tied", [False, True])
def test_gguf_matches_transformers_gguf_loader(tmp_path, qtype, tied):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", qtype, tied=tied)
    model_hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file="tiny.gguf", dtype=torch.float32).eval()
    hf_state = {k: v for k, v in model_hf.state_dict().items()}
    from jaxcult.hub.gguf_io import read_gguf

    _, tensors = read_gguf(path)
    for name, value in tensors.items():
        np.testing.assert_allclose(value, hf_state[name].numpy(), atol=1e-6, err_msg=name)
    model, _ = load_pretrained(path)
    ids = np.random.default_rng(0).integers(0, 64, size=(2, 12))
    with torch.no_grad():
        ref = model_hf(input_ids=torch.tensor(ids)).logits.numpy()
    out = np.asarray(model(jnp.asarray(ids)).logits)
    assert np.abs(out - ref).max() <= 1e-4


def test_unsupported_quantization_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    writer = gguf.GGUFWriter(str(bad), "llama")
    writer.add_head_count(4)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 72), np.uint8), raw_dtype=Q.IQ4_NL)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="IQ4_NL"):
        load_pretrained(bad)


def test_truncated_gguf_is_a_clear_error(tmp_path):
    path = write_tiny_gguf(tmp_path / "t.gguf", Q.F32)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cut.gguf"):
        load_pretrained(cut)
