"""The erf GELU with its closed-form derivative (`jaxcult.models.gelu`, issue 39): the same
function as `jax.nn.gelu(approximate=False)` to float32 rounding, first and second derivatives
included, checked against float64 evaluations of x·Φ(x)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult.models.gelu import gelu
from jaxcult.models.layers import activation

POINTS = np.concatenate([np.linspace(-12.0, 12.0, 24001), [-30.0, -1e-4, 0.0, 1e-4, 30.0]]
                        ).astype(np.float32)


def exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x·Φ(x) and its first two derivatives in float64."""
    x = x.astype(np.float64)
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * density, density * (2.0 - x * x)


def test_value_and_derivatives_match_float64_and_jax_nn_gelu():
    value, first, second = exact(POINTS)
    x = jnp.asarray(POINTS)
    ours = np.asarray(jax.jit(gelu)(x), np.float64)
    theirs = np.asarray(jax.nn.gelu(x, approximate=False), np.float64)
    # two ulps, and in the negative tail 1 + erf cancels to float32's absolute resolution
    # (|x| times a few ulps of 1: float32 erf near ±1; PyTorch's formula cancels too)
    tolerance = 2 * np.spacing(np.abs(value).astype(np.float32)) + 2e-7 * np.abs(POINTS)
    assert np.all(np.abs(ours - value) <= tolerance)
    assert np.all(np.abs(ours - theirs) <= tolerance)

    grad = jax.jit(jax.vmap(jax.grad(gelu)))
    np.testing.assert_allclose(np.asarray(grad(x), np.float64), first, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(grad(x), jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, False)))(x),
                               atol=1e-6, rtol=1e-6)
    curvature = jax.jit(jax.vmap(jax.grad(jax.grad(gelu))))   # forward-over-reverse works too
    np.testing.assert_allclose(np.asarray(curvature(x), np.float64), second, atol=1e-6, rtol=1e-5)
    hvp = jax.jvp(jax.grad(lambda v: gelu(v).sum()), (x,), (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(np.asarray(hvp, np.float64), second, atol=1e-6, rtol=1e-5)


def test_reverse_mode_of_a_projection_matches_jax_nn_gelu():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((16, 48)) / 4, jnp.float32)

    def loss(act):
        return lambda x, w: jnp.sum(jnp.sin(act(x @ w)))

    ours = jax.grad(loss(gelu), argnums=(0, 1))(x, w)
    theirs = jax.grad(loss(lambda v: jax.nn.gelu(v, approximate=False)), argnums=(0, 1))(x, w)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_the_models_gelu_is_this_one_and_keeps_the_input_dtype():
    assert activation("gelu") is gelu
    x = jnp.linspace(-4, 4, 101, dtype=jnp.bfloat16)
    y = gelu(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), exact(np.asarray(x, np.float32))[0],
                               atol=3e-2, rtol=1e-2)
    assert jax.grad(lambda v: gelu(v).astype(jnp.float32).sum())(x).dtype == jnp.bfloat16
