"""GGUF loading: tiny files written here (several quantizations) vs transformers' GGUF loader."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import lora_loss_and_grads  # noqa: E402

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


# -- model.quantize: gguf (the file's own blocks kept) -------------------------------------------

KEPT = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_k": Q.Q4_K, "q5_k": Q.Q5_K, "q6_k": Q.Q6_K}
F16_FIELDS = {"q8_0": [0], "q4_0": [0], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}


def random_blocks(kind: str, rows: int, length: int, rng, scale: float = 1e-3) -> np.ndarray:
    """Rows of random GGUF blocks of `kind` (any bytes are valid codes and small scales; the
    float16 scales drawn finite)."""
    from jaxcult.hub.gguf_blocks import BLOCK_BYTES
    from jaxcult.models.gguf_formats import FORMATS

    blocks = length // FORMATS[kind].block
    raw = rng.integers(0, 256, size=(rows, blocks, BLOCK_BYTES[kind]), dtype=np.uint8)
    for at in F16_FIELDS[kind]:
        raw[..., at:at + 2] = (rng.normal(0, scale, (rows, blocks, 1)).astype(np.float16)
                               .view(np.uint8))
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("kind", list(KEPT))
def test_kept_blocks_dequantise_to_the_reference_bit_for_bit(kind):
    import jax

    from jaxcult.hub.gguf_blocks import GGUFBlocks
    from jaxcult.models.gguf_formats import gguf_dequantize, kernel_parts

    blocks = GGUFBlocks(kind, random_blocks(kind, 6, 512, np.random.default_rng(1), 0.01), 512)
    parts = {k: jnp.asarray(v) for k, v in kernel_parts(kind, blocks.fields()).items()}
    ours = np.asarray(jax.jit(gguf_dequantize, static_argnums=1)(parts, kind)).T
    reference = gguf.quants.dequantize(blocks.raw, KEPT[kind]).reshape(6, 512)
    np.testing.assert_array_equal(ours.view(np.uint32), reference.view(np.uint32))


MIXED = {"attn_q": "q4_k", "attn_k": "q5_k", "attn_v": "q6_k", "attn_output": "q8_0",
         "ffn_gate": "q4_0", "ffn_up": "q4_k", "ffn_down": "q6_k", "token_embd": "q6_k",
         "output": "q8_0"}


def write_mixed_gguf(path, vocab: int):
    """A 2-layer Llama GGUF of width 256 whose weights are K-quants and legacy types mixed as
    llama.cpp's Q4_K_M mixes them, random blocks."""
    rng = np.random.default_rng(0)
    hidden, inter = 256, 512
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((writer.add_block_count, 2), (writer.add_context_length, 64),
                       (writer.add_embedding_length, hidden), (writer.add_feed_forward_length, inter),
                       (writer.add_head_count, 4), (writer.add_head_count_kv, 2),
                       (writer.add_layer_norm_rms_eps, 1e-5), (writer.add_vocab_size, vocab)):
        add(value)
    shapes = {"attn_q": (hidden, hidden), "attn_k": (hidden // 2, hidden),
              "attn_v": (hidden // 2, hidden), "attn_output": (hidden, hidden),
              "ffn_gate": (inter, hidden), "ffn_up": (inter, hidden), "ffn_down": (hidden, inter)}
    names = [(f"blk.{i}.{n}.weight", MIXED[n], s) for i in range(2) for n, s in shapes.items()]
    names += [("token_embd.weight", MIXED["token_embd"], (vocab, hidden)),
              ("output.weight", MIXED["output"], (vocab, hidden))]
    for name, kind, (rows, length) in names:
        writer.add_tensor(name, random_blocks(kind, rows, length, rng), raw_dtype=KEPT[kind])
    for name in [f"blk.{i}.{n}.weight" for i in range(2) for n in ("attn_norm", "ffn_norm")] + [
            "output_norm.weight"]:
        writer.add_tensor(name, np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory):
    return write_mixed_gguf(tmp_path_factory.mktemp("gguf") / "mixed.gguf", vocab=256)


def test_a_gguf_base_keeps_its_blocks_and_computes_the_float_model(mixed_gguf):
    import jax
    from flax import nnx

    from jaxcult.hub.pretrained import load_backbone
    from jaxcult.models.quantize import Quantization, quantized_paths
    from jaxcult.models.quantized import QuantizedWeight
    from jaxcult.peft.lora import add_lora

    kept, _ = load_backbone(mixed_gguf, quantization=Quantization("gguf"))
    plain, _ = load_backbone(mixed_gguf)
    modules = {".".join(map(str, p)): m for p, m in nnx.iter_modules(kept)}
    kinds = {p: m.kernel.kind for p, m in modules.items()
             if p.endswith(("q_proj", "k_proj", "v_proj", "down_proj"))}
    assert kinds["layers.0.q_proj"] == "q4_k" and kinds["layers.1.k_proj"] == "q5_k"
    assert kinds["layers.0.v_proj"] == "q6_k" and kinds["layers.0.down_proj"] == "q6_k"
    assert "lm_head" not in quantized_paths(kept) and len(quantized_paths(kept)) == 14
    for model in (kept, plain):
        add_lora(model, ["q", "v", "down"], r=4, alpha=8, seed=0)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 10)))

    (loss_k, grads_k), (loss_p, grads_p) = lora_loss_and_grads(kept, ids), lora_loss_and_grads(plain, ids)
    assert np.isfinite(float(loss_k)) and float(loss_k) == pytest.approx(float(loss_p), abs=1e-5)
    for a, b in zip(jax.tree.leaves(grads_k), jax.tree.leaves(grads_p)):
        # another summation order: on an AVX2 CPU one of 1024 elements of ~4e-3 differs by 1.5e-6
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
    held = sum(v[...].nbytes for v in jax.tree.leaves(nnx.state(kept, QuantizedWeight)))
    as_float = sum(np.prod(modules[p].kernel.shape) for p in quantized_paths(kept)) * 4
    assert held < 0.2 * as_float   # 4.6-8.5 bits per weight instead of 32


def test_a_run_trains_lora_on_the_kept_blocks_and_refuses_other_sources(tmp_path):
    from jaxcult.config_loading import load_config
    from jaxcult.run.build import build_model, build_run, resolve_plugins

    mixed_gguf = write_mixed_gguf(tmp_path / "mixed.gguf", vocab=30522)  # MiniLM's tokenizer

    common = ["task.name=causal_lm", "model.tokenizer=minilm-l6", "model.max_length=16",
              "data.max_train_examples=8", "data.max_eval_examples=8", "data.target_languages=[en]",
              "peft.kind=lora", "schedule.name=standard", "model.quantize=gguf"]
    parts = build_run(load_config(None, [f"model.name={mixed_gguf}", *common])).parts
    assert parts.groups == ["lora/layer_0", "lora/layer_1"]
    with pytest.raises(UserError, match="a random model has none"):
        build_run(load_config(None, ["model.name=random", "model.overrides={model_type: llama, "
                                     "vocab_size: 30522, hidden_size: 32, num_hidden_layers: 1, "
                                     "num_attention_heads: 4, intermediate_size: 64}", *common]))
    f16 = tmp_path / "f16.gguf"   # a file without kept blocks
    write_tiny_gguf(f16, Q.F16)
    config = load_config(None, [f"model.name={f16}", *common])
    with pytest.raises(UserError, match="has no projection in a type kept so"):
        build_model(config, resolve_plugins(config)[0].task, None)
