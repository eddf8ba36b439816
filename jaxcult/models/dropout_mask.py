"""Dropout keep-masks bit-identical to `jax.random.bernoulli`, at a tenth of its cost on CPU.

XLA:CPU lowers JAX's threefry hash as a rolled five-iteration loop, which XLA cannot fuse with
the counters or the comparison: the random bits were ~18% of an adapter train step. Written
here as straight-line `jnp` (the same Threefry-2x32 rounds, key schedule and counters as JAX's
partitionable threefry, then `uniform < p` done as an integer comparison on the mantissa bits),
the whole mask is one fused loop. Any other PRNG implementation falls back to
`jax.random.bernoulli`, so the masks never depend on which path ran.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
_MANTISSA_BITS = 23  # float32: uniform() keeps the top 23 bits of each 32-bit word


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry2x32(key1: jax.Array, key2: jax.Array, x1: jax.Array, x2: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), the hash behind JAX's default PRNG."""
    keys = (key1, key2, key1 ^ key2 ^ _KEY_PARITY)
    x1, x2 = x1 + keys[0], x2 + keys[1]
    for block in range(5):
        for bits in _ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, bits)
        x1 = x1 + keys[(block + 1) % 3]
        x2 = x2 + keys[(block + 2) % 3] + np.uint32(block + 1)
    return x1, x2


def _is_threefry(key: jax.Array) -> bool:
    return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            and "threefry" in str(jax.random.key_impl(key)))


def keep_mask(key: jax.Array, keep_probability: float, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.bernoulli(key, keep_probability, shape)`, bit for bit."""
    size = math.prod(shape)
    if not (_is_threefry(key) and jax.config.jax_threefry_partitionable and 0 < size < 2 ** 32):
        return jax.random.bernoulli(key, keep_probability, shape)
    key_words = jax.random.key_data(key)
    counts = jax.lax.iota(np.uint32, size).reshape(shape)  # the high count word is 0 below 2**32
    bits1, bits2 = threefry2x32(key_words[0], key_words[1], jnp.zeros_like(counts), counts)
    mantissa = (bits1 ^ bits2) >> np.uint32(32 - _MANTISSA_BITS)
    # uniform = mantissa / 2**23 exactly, so uniform < p  <=>  mantissa < ceil(p * 2**23)
    threshold = math.ceil(float(np.float32(keep_probability)) * 2 ** _MANTISSA_BITS)
    return mantissa < np.uint32(threshold)
