"""Dropout keep-masks: bit-identical to `jax.random.bernoulli` (the masks jaxcult drew before
the straight-line threefry lever), whatever the shape, key, rate or PRNG implementation."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcult.models.dropout_mask import keep_mask
from jaxcult.models.layers import dropout


@pytest.mark.parametrize("shape", [(1,), (7, 5), (4, 16, 384), (2, 12, 9, 9)])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.123456, 1.0, 0.0])
def test_masks_equal_jax_bernoulli_bit_for_bit(shape, keep):
    for seed in range(3):
        key = jax.random.fold_in(jax.random.key(seed), 11 + seed)
        expected = np.asarray(jax.random.bernoulli(key, keep, shape))
        got = np.asarray(jax.jit(keep_mask, static_argnums=(1, 2))(key, keep, shape))
        np.testing.assert_array_equal(got, expected)


def test_other_prng_implementations_fall_back_to_jax():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(np.asarray(keep_mask(key, 0.7, (5, 6))),
                                  np.asarray(jax.random.bernoulli(key, 0.7, (5, 6))))


def test_dropout_scales_kept_units_and_is_identity_without_a_key():
    x = np.arange(1.0, 41.0, dtype=np.float32).reshape(5, 8)
    key = jax.random.key(0)
    out = np.asarray(dropout(x, 0.25, key))
    kept = np.asarray(jax.random.bernoulli(key, 0.75, x.shape))
    np.testing.assert_allclose(out, np.where(kept, x / 0.75, 0.0), rtol=1e-7)
    assert 0 < kept.sum() < kept.size
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.25, None)), x)
