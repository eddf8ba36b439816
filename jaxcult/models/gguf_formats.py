"""GGUF's own weight blocks kept quantised (`model.quantize: gguf`): Q8_0, Q4_0, Q4_K, Q5_K, Q6_K.

A llama.cpp weight row (one output feature) is stored in blocks along its inputs; each block
has integer codes and one or two float16 scales, and the K-quants split a super-block of 256
into sub-blocks with their own small integer scales (and minimums). Here a kernel is `(in,
out)`, so every field is held with `in` first: the codes as bit planes packed along `in` (a
4-bit plane two codes per byte, Q5_K's fifth bit eight per byte, Q6_K's two high bits four per
byte; Q8_0's codes as int8), the scales as arrays of one entry per block and output: bits per
weight Q4_0 4.5, Q4_K 4.63, Q5_K 5.63, Q6_K 6.56, Q8_0 8.5 (in the file: 4.5, 4.5, 5.5, 6.56,
8.5).

Dequantisation runs inside the jitted matmul with the file format's arithmetic: float32, the
same products and differences in the same order as the reference (ggml's, as the `gguf`
package writes it in numpy), so the weights equal a float32 load of the file bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

SUPER = 256  # K-quants: weights per super-block


@dataclass(frozen=True)
class Format:
    """How one GGUF type's fields are held: code bits (`high` bits above a 4-bit plane),
    weights per float16 scale `d`, and per sub-block scale (K-quants)."""

    bits: int
    block: int
    sub_block: int | None = None
    has_min: bool = False

    @property
    def high(self) -> int:
        return self.bits - 4 if self.bits in (5, 6) else 0


FORMATS = {
    "q8_0": Format(bits=8, block=32),
    "q4_0": Format(bits=4, block=32),
    "q4_k": Format(bits=4, block=SUPER, sub_block=32, has_min=True),
    "q5_k": Format(bits=5, block=SUPER, sub_block=32, has_min=True),
    "q6_k": Format(bits=6, block=SUPER, sub_block=16),
}


def pack_plane(values: np.ndarray, width: int) -> np.ndarray:
    """(in, out) codes of `width` bits (1, 2 or 4) -> (in * width / 8, out) uint8: 8 / width
    consecutive inputs per byte, the first in the lowest bits."""
    per = 8 // width
    grouped = values.astype(np.uint8).reshape(-1, per, values.shape[-1])
    packed = np.zeros((grouped.shape[0], values.shape[-1]), np.uint8)
    for j in range(per):
        packed |= grouped[:, j] << np.uint8(j * width)
    return packed


def unpack_plane(packed: jax.Array, width: int) -> jax.Array:
    """The inverse of `pack_plane`, traced."""
    per = 8 // width
    shifts = (jnp.arange(per, dtype=jnp.uint8) * width)[None, :, None]
    values = (packed[:, None, :] >> shifts) & np.uint8((1 << width) - 1)
    return values.reshape(-1, packed.shape[-1])


def kernel_parts(kind: str, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A GGUF tensor's fields (rows first: `q` codes [rows, in], `d` [rows, in / block], and
    the K-quants' `sc` and `m` [rows, in / sub_block], `dmin`) -> the kernel's parts, `in`
    first (`low` and `high` planes or int8 `codes`; scales transposed)."""
    spec = FORMATS[kind]
    q = fields["q"].T
    parts = {name: np.ascontiguousarray(value.T) for name, value in fields.items() if name != "q"}
    if spec.bits == 8:
        parts["codes"] = np.ascontiguousarray(q.astype(np.int8))
        return parts
    parts["low"] = pack_plane(q & np.uint8(15), 4)
    if spec.high:
        parts["high"] = pack_plane(q >> np.uint8(4), spec.high)
    return parts


def _per_weight(scale: jax.Array, size: int) -> jax.Array:
    """[in / size, out] -> [in, out]: each entry repeated over its `size` weights."""
    return jnp.repeat(scale, size, axis=0)


def gguf_dequantize(parts: dict[str, jax.Array], kind: str) -> jax.Array:
    """The float32 (in, out) kernel of `kernel_parts`, computed as the reference does."""
    spec = FORMATS[kind]
    d = parts["d"].astype(jnp.float32)
    if spec.bits == 8:
        return _per_weight(d, spec.block) * parts["codes"].astype(jnp.float32)
    q = unpack_plane(parts["low"], 4)
    if spec.high:
        q = q | (unpack_plane(parts["high"], spec.high) << np.uint8(4))
    if kind == "q4_0":
        return _per_weight(d, spec.block) * (q.astype(jnp.int8) - np.int8(8)).astype(jnp.float32)
    per_sub = spec.block // spec.sub_block
    scale = _per_weight(d, per_sub) * parts["sc"].astype(jnp.float32)     # d * sc, per sub-block
    if spec.has_min:
        low = _per_weight(parts["dmin"].astype(jnp.float32), per_sub) * parts["m"].astype(jnp.float32)
        return _per_weight(scale, spec.sub_block) * q.astype(jnp.float32) - _per_weight(low, spec.sub_block)
    centred = (q.astype(jnp.int8) - np.int8(32)).astype(jnp.float32)      # Q6_K
    return _per_weight(scale, spec.sub_block) * centred
