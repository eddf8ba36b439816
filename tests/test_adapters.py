"""Bottleneck adapters: identity at init, AdapterHub placement, group table, bad configs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcult import models
from jaxcult.config import PeftConfig
from jaxcult.errors import UserError
from jaxcult.peft.bottleneck import AdapterStack, add_bottleneck_adapters, make_adapters
from jaxcult.peft.invertible import NICEAdapter

CONFIG = models.EncoderConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=40)


def outputs(model):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50, size=(2, 6)))
    return np.asarray(model(ids).last_hidden_state)


@pytest.mark.parametrize("kind", ["pfeiffer", "houlsby", "parallel"])
def test_fresh_adapters_are_identity_and_train_changes_them(kind):
    model = models.build(CONFIG)
    base = outputs(model)
    add_bottleneck_adapters(model, PeftConfig(kind=kind, reduction_factor=4))
    np.testing.assert_allclose(outputs(model), base, atol=1e-6)
    adapter = model.layers[0].output_adapter
    adapter.up.kernel[...] = 0.1 * jax.random.normal(jax.random.key(0), adapter.up.kernel.shape)
    assert np.abs(outputs(model) - base).max() > 1e-4
    hooks = [h for h in ("attention_adapter", "output_adapter")
             if getattr(model.layers[0], h) is not None]
    assert hooks == (["attention_adapter", "output_adapter"] if kind == "houlsby" else ["output_adapter"])


def test_fresh_decoder_adapters_and_invertible_adapter_are_identity():
    decoder = models.build(models.DecoderConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=40))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50, size=(2, 6)))
    base = np.asarray(decoder(ids).logits)
    add_bottleneck_adapters(decoder, PeftConfig(kind="houlsby", reduction_factor=4))
    assert decoder.layers[0].attention_adapter is not None
    np.testing.assert_allclose(np.asarray(decoder(ids).logits), base, atol=1e-6)
    encoder = models.build(CONFIG)
    base = outputs(encoder)
    encoder.embedding_adapter = NICEAdapter(32, reduction_factor=2)
    np.testing.assert_allclose(outputs(encoder), base, atol=1e-6)


def test_nice_adapter_inverts_and_matches_coupling_equations():
    nice = NICEAdapter(31, non_linearity="tanh", reduction_factor=2, seed=3)
    for net in (nice.F, nice.G):
        net.up.kernel[...] = 0.3 * jax.random.normal(jax.random.key(1), net.up.kernel.shape)
    x = jax.random.normal(jax.random.key(2), (2, 5, 31))
    y = nice(x)
    x1, x2 = x[..., :15], x[..., 15:]
    y1 = x1 + nice.F.up(jnp.tanh(nice.F.down(x2)))
    np.testing.assert_allclose(np.asarray(y[..., :15]), np.asarray(y1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(y[..., 15:]),
                               np.asarray(x2 + nice.G.up(jnp.tanh(nice.G.down(y1)))), atol=1e-6)
    assert np.abs(np.asarray(y - x)).max() > 1e-3
    np.testing.assert_allclose(np.asarray(nice.inverse(y)), np.asarray(x), atol=1e-5)


def test_parallel_and_stack_formulas_match_adapterhub_definitions():
    """par_bn: LN(x + up(act(down(r))) * s + r); Stack(lang, task): the task adapter reads the
    language adapter's output before LN and closes the block with LN(. + r)."""
    rng = np.random.default_rng(4)
    x, r = (jnp.asarray(rng.normal(size=(2, 5, 32)), jnp.float32) for _ in range(2))
    model = models.build(CONFIG)
    add_bottleneck_adapters(model, PeftConfig(kind="parallel", reduction_factor=4))
    layer = model.layers[0]
    adapter, norm = layer.output_adapter, layer.output_norm
    adapter.up.kernel[...] = 0.1 * jax.random.normal(jax.random.key(1), adapter.up.kernel.shape)
    assert adapter.scaling == 4.0  # AdapterHub's par_bn default
    expected = norm(x + adapter.up(jax.nn.relu(adapter.down(r))) * 4.0 + r)
    np.testing.assert_allclose(np.asarray(adapter(x, r, norm, None)), np.asarray(expected), atol=1e-5)
    lang, task = (make_adapters(models.build(CONFIG), PeftConfig(kind="pfeiffer", reduction_factor=4),
                                seed)[0, "output_adapter"] for seed in (1, 2))
    for part in (lang, task):
        part.up.kernel[...] = 0.1 * jax.random.normal(jax.random.key(5), part.up.kernel.shape)
    a = lang.up(jax.nn.relu(lang.down(norm(x + r)))) + x
    b = task.up(jax.nn.relu(task.down(norm(a + r)))) + a
    stacked = AdapterStack(lang, task)(x, r, norm, None)
    np.testing.assert_allclose(np.asarray(stacked), np.asarray(norm(b + r)), atol=1e-5)


def test_pfeiffer_formula_matches_adapterhub_definition():
    """seq_bn: h = LN(x + r); a = up(relu(down(h))) + x; out = LN(a + r)."""
    model = models.build(CONFIG)
    add_bottleneck_adapters(model, PeftConfig(kind="pfeiffer", reduction_factor=4))
    layer = model.layers[1]
    adapter = layer.output_adapter
    adapter.up.kernel[...] = 0.1 * jax.random.normal(jax.random.key(1), adapter.up.kernel.shape)
    rng = np.random.default_rng(2)
    x, r = (jnp.asarray(rng.normal(size=(2, 5, 32)), jnp.float32) for _ in range(2))
    norm = layer.output_norm
    h = norm(x + r)
    a = adapter.up(jax.nn.relu(adapter.down(h))) + x
    np.testing.assert_allclose(np.asarray(adapter(x, r, norm, None)), np.asarray(norm(a + r)),
                               atol=1e-6)


def test_leave_out_and_per_layer_reduction():
    model = models.build(CONFIG)
    add_bottleneck_adapters(model, PeftConfig(kind="pfeiffer", reduction_factor=[2, 4, 8],
                                              leave_out=[1]))
    assert model.layers[1].output_adapter is None
    assert model.layers[0].output_adapter.down.kernel.shape == (32, 16)
    assert model.layers[2].output_adapter.down.kernel.shape == (32, 4)


def test_bad_adapter_configs():
    with pytest.raises(UserError, match="zero-width"):
        add_bottleneck_adapters(models.build(CONFIG), PeftConfig(kind="pfeiffer", reduction_factor=64))
    with pytest.raises(UserError, match="3 layers"):
        add_bottleneck_adapters(models.build(CONFIG), PeftConfig(kind="pfeiffer", reduction_factor=[2, 2]))
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PeftConfig(kind="pfeiffer", non_linearity="softsign")


def test_group_table_for_xlmr_base_shape():
    """12 task-adapter groups + head; Pfeiffer rf 16 on hidden 768: 2*768*48 + 48 + 768 each."""
    from flax import nnx

    from jaxcult.models.classifier import SequenceClassifier
    from jaxcult.peft.groups import group_of

    config = models.EncoderConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=12,
                                  num_attention_heads=12, intermediate_size=3072,
                                  model_type="xlm-roberta", pad_token_id=1, max_position_embeddings=514)
    encoder = nnx.eval_shape(lambda: models.build(config))
    add_bottleneck_adapters(encoder, PeftConfig(kind="pfeiffer", reduction_factor=16))
    model = SequenceClassifier(encoder, 3)
    counts = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        group = group_of(".".join(map(str, path)), "pfeiffer")
        if group:
            counts[group] = counts.get(group, 0) + int(np.prod(var.shape))
    assert len(counts) == 13 and "head" in counts
    per_layer = 768 * 48 + 48 + 48 * 768 + 768
    assert all(counts[f"adapter/task/layer_{i}"] == per_layer for i in range(12))
