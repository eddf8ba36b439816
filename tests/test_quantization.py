"""NF4 and int8 frozen bases: the formats against their definitions (and bitsandbytes where it
runs), a LoRA step on an NF4 model against the same step on its dequantised weights, the
config path, sharding, and the refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import lora_loss_and_grads, needs_minilm, tiny_random_model, xla_flags
from flax import nnx

from jaxcult import models
from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.models.layers import Dense
from jaxcult.models.quant_formats import (
    DYNAMIC_CODE,
    NF4_CODE,
    SECOND_BLOCK,
    int8_dequantize,
    int8_quantize,
    nf4_dequantize,
    nf4_quantize,
)
from jaxcult.models.quantize import Quantization, quantize_projections, quantized_paths
from jaxcult.models.quantized import QuantizedWeight
from jaxcult.peft.lora import add_lora, lora_modules, merge

RNG = np.random.default_rng(0)


def nf4_from_definition() -> np.ndarray:
    """QLoRA's NormalFloat: quantiles of N(0, 1) at evenly spaced probabilities from
    1 - delta to 1/2 (delta = 1 - 0.9677083), 8 positive and 7 negative, an exact zero,
    normalised to [-1, 1]."""
    from scipy.stats import norm

    offset = 0.9677083
    positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([positive, [0.0], negative]))
    return values / np.abs(values).max()


def nearest(scaled: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Brute force: the index of the nearest code value (the lower one on a tie)."""
    return np.argmin(np.abs(scaled.astype(np.float64)[..., None] - code.astype(np.float64)), -1)


def reference_nf4(w: np.ndarray, block: int, offset: np.float32 | None = None):
    """NF4 of an HF-layout (out, in) weight by the definition: blockwise absmax along `in`,
    codes of x * (1 / absmax); with `offset` (double quantisation) the absmax values less the
    offset are quantised with the dynamic map in blocks of 256, in row-major order."""
    blocks = w.reshape(-1, block)
    absmax = np.abs(blocks).max(1)
    q = nearest(np.clip(blocks * (np.float32(1) / absmax)[:, None], -1, 1), NF4_CODE)
    if offset is not None:
        shifted = absmax - offset
        padded = np.pad(shifted, (0, -len(shifted) % SECOND_BLOCK)).reshape(-1, SECOND_BLOCK)
        absmax2 = np.abs(padded).max(1)
        q2 = nearest(padded * (np.float32(1) / absmax2)[:, None], DYNAMIC_CODE).reshape(-1)
        absmax = (DYNAMIC_CODE[q2[:len(shifted)]] * np.repeat(absmax2, SECOND_BLOCK)[:len(shifted)]
                  + offset).astype(np.float32)
    return (NF4_CODE[q] * absmax[:, None]).reshape(w.shape), q


def test_code_tables_follow_their_definitions():
    np.testing.assert_allclose(NF4_CODE, nf4_from_definition(), atol=2e-7)
    assert NF4_CODE[7] == 0.0 and (NF4_CODE > 0).sum() == 8 and np.all(np.diff(NF4_CODE) > 0)
    assert len(DYNAMIC_CODE) == 256 and {0.0, 1.0} <= set(DYNAMIC_CODE.tolist())
    positive = DYNAMIC_CODE[DYNAMIC_CODE > 0]
    np.testing.assert_array_equal(np.sort(-DYNAMIC_CODE[DYNAMIC_CODE < 0]), positive[:-1])
    # the largest exponent's 64 fractions lie in [0.1, 1], each smaller one's a decade lower
    assert np.sum(positive[:-1] >= 0.1) == 64 and positive.min() == pytest.approx(5.5e-7)


@pytest.mark.parametrize("shape", [(96, 192), (256, 512)])
def test_nf4_round_trip_equals_the_definition_bit_for_bit(shape):
    w = (RNG.standard_normal(shape) * 0.05).astype(np.float32)
    parts = nf4_quantize(jnp.asarray(w.T), 64, False)
    expected, q = reference_nf4(w, 64)
    np.testing.assert_array_equal(np.asarray(nf4_dequantize(parts, 64)).T, expected)
    codes = np.asarray(parts["codes"]).T.reshape(-1)   # HF order, two codes per byte
    np.testing.assert_array_equal(codes, (q.reshape(-1)[::2] << 4) | q.reshape(-1)[1::2])


def test_double_quantisation_equals_the_definition_bit_for_bit():
    w = (RNG.standard_normal((160, 512)) * 0.05).astype(np.float32)
    parts = nf4_quantize(jnp.asarray(w.T), 64, True)
    absmax = np.abs(w.reshape(-1, 64)).max(1)
    # the mean's last bit depends on the summation order: within one float32 rounding
    assert float(parts["offset"]) == pytest.approx(absmax.astype(np.float64).mean(), rel=1e-6)
    expected, _ = reference_nf4(w, 64, np.float32(parts["offset"]))
    assert parts["absmax"].dtype == jnp.uint8 and parts["absmax2"].shape == (160 * 8 // 256,)
    np.testing.assert_array_equal(np.asarray(nf4_dequantize(parts, 64)).T, expected)


def test_int8_round_trip_equals_the_definition():
    w = RNG.standard_normal((48, 80)).astype(np.float32)
    parts = int8_quantize(jnp.asarray(w.T))
    absmax = np.abs(w).max(1)
    q = np.rint(w * (np.float32(127) / absmax)[:, None])
    np.testing.assert_array_equal(np.asarray(parts["codes"]).T, q)
    np.testing.assert_array_equal(np.asarray(int8_dequantize(parts)).T,
                                  q * (absmax / np.float32(127))[:, None])


@pytest.fixture
def bnb():
    return pytest.importorskip("bitsandbytes.functional")


def test_nf4_matches_bitsandbytes(bnb):
    import torch

    w = (RNG.standard_normal((192, 320)) * 0.02).astype(np.float32)
    packed, state = bnb.quantize_4bit(torch.tensor(w), blocksize=64, quant_type="nf4")
    parts = nf4_quantize(jnp.asarray(w.T), 64, False)
    np.testing.assert_array_equal(np.asarray(parts["codes"]).T.reshape(-1), packed.numpy().reshape(-1))
    np.testing.assert_array_equal(np.asarray(parts["absmax"]).T.reshape(-1), state.absmax.numpy())
    np.testing.assert_array_equal(np.asarray(nf4_dequantize(parts, 64)).T,
                                  bnb.dequantize_4bit(packed, state).numpy())


def test_double_quantisation_matches_bitsandbytes_where_it_rounds_to_nearest(bnb):
    """The dynamic map, the offset and the second-level scales are bitsandbytes' own; its CPU
    kernel picks the 8-bit codes by an approximate search, so where a code differs ours is
    the nearer one."""
    import torch

    np.testing.assert_array_equal(DYNAMIC_CODE, bnb.create_dynamic_map().numpy())
    w = (RNG.standard_normal((1536, 576)) * 0.05).astype(np.float32)
    _, state = bnb.quantize_4bit(torch.tensor(w), blocksize=64, quant_type="nf4",
                                 compress_statistics=True)
    parts = nf4_quantize(jnp.asarray(w.T), 64, True)
    assert float(parts["offset"]) == float(state.offset)
    np.testing.assert_array_equal(np.asarray(parts["absmax2"]), state.state2.absmax.numpy())
    ours, theirs = np.asarray(parts["absmax"]).T.reshape(-1), state.absmax.numpy()
    absmax = np.abs(w.reshape(-1, 64)).max(1) - np.float32(parts["offset"])
    scaled = absmax * (np.float32(1) / np.repeat(state.state2.absmax.numpy(), 256)[:len(absmax)])
    differ = ours != theirs
    assert differ.mean() < 0.01
    distance = {name: np.abs(scaled - DYNAMIC_CODE[codes])[differ]
                for name, codes in (("ours", ours), ("theirs", theirs))}
    assert np.all(distance["ours"] <= distance["theirs"])


def test_int8_matches_bitsandbytes(bnb):
    import torch

    w = RNG.standard_normal((64, 96)).astype(np.float32)
    codes, scales, _ = bnb.int8_vectorwise_quant(torch.tensor(w))
    parts = int8_quantize(jnp.asarray(w.T))
    np.testing.assert_array_equal(np.asarray(parts["codes"]).T, codes.numpy())
    np.testing.assert_array_equal(np.asarray(parts["absmax"]), scales.numpy())


TINY = dict(model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def tiny_lora_llama(seed: int = 0) -> nnx.Module:
    model = models.build(models.config_from_hf(TINY, "tiny"), seed=seed)
    add_lora(model, ["q", "v", "down"], r=4, alpha=8)
    for _, dense in lora_modules(model):   # a LoRA update that is not zero
        dense.lora_b[...] = jax.random.normal(jax.random.key(1), dense.lora_b.shape) * 0.1
    return model


@pytest.mark.parametrize("kind", [pytest.param("nf4", marks=pytest.mark.slow), "int8"])  # nf4: ~14 s;
def test_lora_step_on_a_quantised_base_equals_the_step_on_its_dequantised_weights(kind):
    # NF4's numbers stay in the default run (bit for bit, against bitsandbytes, above)
    ids = jax.random.randint(jax.random.key(2), (2, 12), 0, 256)
    quantised, dequantised = tiny_lora_llama(), tiny_lora_llama()
    paths = quantize_projections(quantised, Quantization(kind, 64, kind == "nf4"))
    assert "lm_head" not in paths and len(paths) == 2 * 7
    modules = dict(nnx.iter_modules(quantised))
    for path, dense in nnx.iter_modules(dequantised):
        if isinstance(dense, Dense) and modules[path].quantized:
            dense.kernel[...] = modules[path].kernel.dequantize(jnp.float32)
    loss_q, grads_q = lora_loss_and_grads(quantised, ids)
    loss_d, grads_d = lora_loss_and_grads(dequantised, ids)
    assert float(loss_q) == pytest.approx(float(loss_d), abs=1e-6)
    for a, b in zip(jax.tree.leaves(grads_q), jax.tree.leaves(grads_d)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # the quantised arrays are not parameters: nothing differentiates or trains them
    assert not any(isinstance(v, nnx.Param) for v in jax.tree.leaves(
        nnx.state(quantised, QuantizedWeight), is_leaf=lambda x: isinstance(x, nnx.Variable)))


def test_quantised_embeddings_look_up_and_attend_with_the_dequantised_table():
    config = models.config_from_hf({**TINY, "tie_word_embeddings": True}, "tiny")
    quantised, dequantised = models.build(config, seed=0), models.build(config, seed=0)
    paths = quantize_projections(quantised, Quantization("nf4", 32, True, embeddings=True))
    assert "embed_tokens" in paths and quantised.embed_tokens.quantized
    table = quantised.embed_tokens.embedding.dequantize(jnp.float32).T   # (vocab, hidden)
    assert table.shape == (256, 64)
    dequantised.embed_tokens.embedding[...] = table
    for path, module in nnx.iter_modules(dequantised):
        if isinstance(module, Dense):
            module.kernel[...] = dict(nnx.iter_modules(quantised))[path].kernel.dequantize(jnp.float32)
    ids = jnp.arange(20).reshape(2, 10)
    forward = jax.jit(lambda graphdef, state: nnx.merge(graphdef, state)(ids).logits)
    np.testing.assert_allclose(forward(*nnx.split(quantised)), forward(*nnx.split(dequantised)),
                               atol=1e-6)


def test_a_checkpoint_is_quantised_projection_by_projection_as_it_loads(tiny_chat_model):
    """The same codes and scales as quantising the fully loaded model, without it ever
    existing whole in its float dtype."""
    from jaxcult.hub.pretrained import load_backbone

    settings = Quantization("nf4", 16, True)
    loaded, _ = load_backbone(tiny_chat_model[0], quantization=settings)
    afterwards, _ = load_backbone(tiny_chat_model[0])
    quantize_projections(afterwards, settings)
    assert quantized_paths(loaded) == quantized_paths(afterwards) and len(quantized_paths(loaded)) == 14
    for a, b in zip(jax.tree.leaves(nnx.state(loaded, QuantizedWeight)),
                    jax.tree.leaves(nnx.state(afterwards, QuantizedWeight))):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_reads_the_kernel_dequantised_in_float32_then_cast():
    model = models.build(models.config_from_hf({**TINY, "dtype": "bfloat16"}, "tiny"), seed=0)
    quantize_projections(model, Quantization("nf4"))
    dense = model.layers[0].q_proj
    parts = {k: getattr(dense.kernel, k)[...] for k in ("codes", "absmax")}
    np.testing.assert_array_equal(dense.kernel.dequantize(jnp.bfloat16),
                                  nf4_dequantize(parts, 64).astype(jnp.bfloat16))


def test_refusals_name_the_module_or_setting():
    model = tiny_lora_llama()
    with pytest.raises(UserError, match=r"block_size: 48 does not divide the \d+ inputs of layers\.0\."):
        quantize_projections(models.build(models.config_from_hf(TINY, "t")), Quantization("nf4", 48))
    with pytest.raises(UserError, match="no projection of this model is left"):
        quantize_projections(model, Quantization("int8", skip=(
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")))
    quantize_projections(model, Quantization("nf4"))
    assert quantized_paths(model)[0].startswith("layers.0.")
    with pytest.raises(UserError, match="cannot be merged into the quantised kernel of layers.0"):
        merge(model)


TINY_RUN = [
    "task.name=causal_lm", *tiny_random_model("llama", hidden=64, intermediate=128, kv_heads=2,
                                              max_length=16),
    "data.max_train_examples=16", "data.max_eval_examples=8", "data.target_languages=[en]",
    "trainer.batch_size=4", "peft.kind=lora",
]


@needs_minilm
def test_config_quantises_the_frozen_backbone_and_refuses_what_cannot_hold():
    from jaxcult.run.build import build_run

    built = build_run(load_config(None, [*TINY_RUN, "model.quantize=nf4", "model.quantize_double=true",
                                         "model.compute_dtype=float16"]))
    frozen = nnx.to_flat_state(built.parts.frozen)
    quantised = {".".join(map(str, p)) for p, v in frozen if isinstance(v, QuantizedWeight)}
    assert "encoder.layers.0.q_proj.kernel.codes" in quantised or "layers.0.q_proj.kernel.codes" in quantised
    assert not any("lm_head" in p for p in quantised)
    plain = build_run(load_config(None, TINY_RUN))
    assert built.parts.total_params == plain.parts.total_params
    with pytest.raises(UserError, match="peft.kind=full trains it"):
        build_run(load_config(None, [*TINY_RUN, "model.quantize=int8", "peft.kind=full"]))
    with pytest.raises(UserError, match="modules_to_save: .*q_proj is quantised"):
        build_run(load_config(None, [*TINY_RUN, "model.quantize=int8",
                                     "peft.modules_to_save=[layers.0.q_proj]"]))
    with pytest.raises(UserError, match="quantize_double has no effect here"):
        load_config(None, [*TINY_RUN, "model.quantize_double=true"])
    with pytest.raises(UserError, match="quantize_embeddings has no effect here"):
        load_config(None, [*TINY_RUN, "model.quantize_embeddings=true"])
    with pytest.raises(UserError, match="quantize_block_size has no effect here"):
        load_config(None, [*TINY_RUN, "model.quantize=int8", "model.quantize_block_size=32"])


def test_quantised_kernels_shard_like_their_kernels_and_give_the_same_logits():
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from jaxcult import models
        from jaxcult.config import MeshConfig
        from jaxcult.models.quantize import Quantization, quantize_projections
        from jaxcult.models.quantized import QuantizedWeight
        from jaxcult.sharding import make_mesh, place_variables
        config = models.config_from_hf(dict(model_type="llama", vocab_size=256, hidden_size=128,
            intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2), "t")
        mesh_config = MeshConfig(data=1, fsdp=8, tensor=1)
        mesh = make_mesh(mesh_config)
        single, sharded = models.build(config), models.build(config)
        quantize_projections(single, Quantization("nf4", 64, True))
        quantize_projections(sharded, Quantization("nf4", 64, True), mesh, mesh_config.rules)
        leaves = jax.tree.leaves(nnx.state(sharded, QuantizedWeight))
        codes = [x for x in leaves if x.ndim == 2]
        total = sum(x.nbytes for x in codes)
        for device in mesh.devices.flat:
            held = sum(s.data.nbytes for x in codes for s in x.addressable_shards if s.device == device)
            assert held <= total / 4, (device, held, total)
        ids = jnp.arange(24).reshape(2, 12)
        forward = jax.jit(lambda graphdef, state: nnx.merge(graphdef, state)(ids).logits)
        np.testing.assert_allclose(forward(*nnx.split(sharded)), forward(*nnx.split(single)), atol=1e-5)
        print("OK")
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
