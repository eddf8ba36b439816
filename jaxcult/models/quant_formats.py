"""Weight-only quantisation formats, as pure array functions: NF4 (QLoRA) and int8 (LLM.int8).

Layouts follow Hugging Face's `(out, in)` weights so that blocks and bytes match bitsandbytes:
a projection kernel here is `(in, out)`, and a block is `block` consecutive entries along `in`
of one output column. Each format quantises with `jax.numpy` (on the device that holds the
kernel, sharded like it; traceable, so a plan quantises shapes only) and dequantises inside the
jitted step, in float32 before the cast to the compute dtype, as bitsandbytes does.

- **NF4** (Dettmers et al., 2023): x ≈ NF4[q] · absmax(block), with NF4 the 16 quantiles of
  N(0, 1) scaled to [-1, 1] (an exact zero; 8 positive, 7 negative values); q is the nearest
  code to x · (1 / absmax). Two 4-bit codes per byte, the first in the high nibble.
  **Double quantisation**: the float32 absmax values, less their mean, are quantised again in
  blocks of 256 with the signed 8-bit dynamic map (Dettmers, 2016), as bitsandbytes does.
- **int8**: x ≈ q · absmax(column) / 127 with q = round(127 · x / absmax), one scale per output
  column (LLM.int8's row-wise weight quantisation, without the outlier decomposition).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The NF4 data type: the published 16 values (QLoRA, appendix E; bitsandbytes' table).
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)

SECOND_BLOCK = 256  # double quantisation: absmax values per second-level block


def _even_split(low: float, high: float, count: int) -> np.ndarray:
    """`count` float32 points evenly from `low` to `high`, each computed from the nearer end
    with a float32 step and one rounding (how torch's linspace computes the points that
    bitsandbytes' dynamic map is built from)."""
    step = float(np.float32((np.float32(high) - np.float32(low)) / np.float32(count - 1)))
    index = np.arange(count)
    near_low = float(np.float32(low)) + step * index
    near_high = float(np.float32(high)) - step * (count - 1 - index)
    return np.where(index < count // 2, near_low, near_high).astype(np.float32)


def dynamic_map() -> np.ndarray:
    """The signed 8-bit dynamic data type (7 exponent bits): for each exponent e = 0..6, 2^e
    fractions (the midpoints of an even split of [0.1, 1] into 2^e parts) times 10^(e-6),
    with both signs, plus 0 and 1; 256 sorted float32 values."""
    values = [0.0, 1.0]
    for exponent in range(7):
        edges = _even_split(0.1, 1.0, 2 ** exponent + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2.0)
        scaled = np.float32(10.0 ** (exponent - 6)) * means   # a float32 product
        values += [*scaled, *-scaled]
    return np.sort(np.array(values, dtype=np.float32))


DYNAMIC_CODE = dynamic_map()


def _nearest(scaled: jax.Array, code: np.ndarray) -> jax.Array:
    """Index of the nearest code value (a value on a midpoint takes the lower one)."""
    midpoints = jnp.asarray((code[:-1] + code[1:]) / np.float32(2.0))
    return jnp.sum(scaled[..., None] > midpoints, axis=-1).astype(jnp.uint8)


def _absmax_scaled(blocks: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """(absmax of each block, the block's values times 1/absmax clipped to [-1, 1])."""
    absmax = jnp.max(jnp.abs(blocks), axis=axis)
    inverse = 1.0 / jnp.maximum(absmax, np.float32(1e-38))
    return absmax, jnp.clip(blocks * jnp.expand_dims(inverse, axis), -1.0, 1.0)


def nf4_quantize(kernel: jax.Array, block: int, double: bool) -> dict[str, jax.Array]:
    """An (in, out) kernel -> `codes` (in/2, out) uint8 and its block scales: `absmax`
    (in/block, out) float32, or with `double` `absmax` as uint8 codes plus `absmax2` (one
    float32 per 256 scales, taken in Hugging Face order) and `offset` (their mean)."""
    fan_in, fan_out = kernel.shape
    blocks = kernel.astype(jnp.float32).reshape(fan_in // block, block, fan_out)
    absmax, scaled = _absmax_scaled(blocks, axis=1)
    q = _nearest(scaled.reshape(fan_in // 2, 2, fan_out), NF4_CODE)
    out = {"codes": (q[:, 0] << 4) | q[:, 1], "absmax": absmax}
    if double:
        out.update(_quantize_scales(absmax))
    return out


def _quantize_scales(absmax: jax.Array) -> dict[str, jax.Array]:
    """Double quantisation of (in/block, out) absmax values, blocked in HF order (out-major)."""
    offset = jnp.mean(absmax, dtype=jnp.float32)
    flat = (absmax - offset).T.reshape(-1)
    padded = jnp.pad(flat, (0, -flat.shape[0] % SECOND_BLOCK))
    absmax2, scaled = _absmax_scaled(padded.reshape(-1, SECOND_BLOCK), axis=1)
    q = _nearest(scaled, DYNAMIC_CODE).reshape(-1)[:flat.shape[0]]
    return {"absmax": q.reshape(absmax.shape[::-1]).T, "absmax2": absmax2, "offset": offset}


def _dequantize_scales(q: jax.Array, absmax2: jax.Array, offset: jax.Array) -> jax.Array:
    blocks_per_column, fan_out = q.shape
    hf_index = (jnp.arange(fan_out)[None, :] * blocks_per_column
                + jnp.arange(blocks_per_column)[:, None])
    return jnp.asarray(DYNAMIC_CODE)[q] * absmax2[hf_index // SECOND_BLOCK] + offset


def nf4_dequantize(parts: dict[str, jax.Array], block: int) -> jax.Array:
    """The float32 (in, out) kernel of `nf4_quantize`'s parts."""
    codes = parts["codes"]
    half, fan_out = codes.shape
    q = jnp.stack([codes >> 4, codes & 15], axis=1).reshape(2 * half, fan_out)
    absmax = parts["absmax"]
    if "absmax2" in parts:
        absmax = _dequantize_scales(absmax, parts["absmax2"], parts["offset"])
    values = jnp.asarray(NF4_CODE)[q].reshape(-1, block, fan_out)
    return (values * absmax[:, None, :]).reshape(2 * half, fan_out)


def int8_quantize(kernel: jax.Array) -> dict[str, jax.Array]:
    """An (in, out) kernel -> `codes` int8 and one absmax per output column."""
    kernel = kernel.astype(jnp.float32)
    absmax = jnp.max(jnp.abs(kernel), axis=0)
    q = jnp.round(kernel * (127.0 / jnp.maximum(absmax, np.float32(1e-38))))
    return {"codes": q.astype(jnp.int8), "absmax": absmax}


def int8_dequantize(parts: dict[str, jax.Array]) -> jax.Array:
    return parts["codes"].astype(jnp.float32) * (parts["absmax"] / 127.0)

