"""A frozen projection kernel kept quantised (NF4 or int8) and dequantised inside the matmul.

Its arrays are `QuantizedWeight` variables, not `nnx.Param`: they never train, are never
differentiated, and land in the frozen part of a run's state. Each carries the kernel's logical
axes (or none, for the small second-level scales), so a mesh shards it like the kernel it
replaces.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.models.quant_formats import (
    int8_dequantize,
    int8_quantize,
    nf4_dequantize,
    nf4_quantize,
)

KINDS = ("nf4", "int8")
_QUANTIZE = {"nf4": jax.jit(nf4_quantize, static_argnums=(1, 2)),
             "int8": jax.jit(lambda kernel, _block, _double: int8_quantize(kernel),
                             static_argnums=(1, 2))}


class QuantizedWeight(nnx.Variable):
    """A quantised frozen weight's codes or scales."""


class QuantizedKernel(nnx.Module):
    """The codes and scales of one (in, out) kernel; `dequantize(dtype)` gives it back."""

    def __init__(self, kernel: jax.Array, axes: tuple[str, str], kind: str, block: int = 64,
                 double: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown quantisation {kind!r}; known: {', '.join(KINDS)}")
        self.kind, self.block, self.shape, self.axes = kind, block, tuple(kernel.shape), axes
        quantize = (functools.partial(nf4_quantize, block=block, double=double) if kind == "nf4"
                    else int8_quantize)
        parts = (jax.eval_shape(quantize, kernel) if isinstance(kernel, jax.ShapeDtypeStruct)
                 else _QUANTIZE[kind](kernel, block, double))
        other_axes = {"absmax2": (None,), "offset": ()} if kind == "nf4" else {"absmax": (axes[1],)}
        self.codes = QuantizedWeight(parts["codes"], axes=axes)
        self.absmax = QuantizedWeight(parts["absmax"], axes=other_axes.get("absmax", axes))
        self.absmax2, self.offset = nnx.data(None), nnx.data(None)   # double quantisation
        if "absmax2" in parts:
            self.absmax2 = QuantizedWeight(parts["absmax2"], axes=other_axes["absmax2"])
            self.offset = QuantizedWeight(parts["offset"], axes=other_axes["offset"])

    def _parts(self) -> dict[str, jax.Array]:
        parts = {"codes": self.codes[...], "absmax": self.absmax[...]}
        if self.absmax2 is not None:
            parts.update(absmax2=self.absmax2[...], offset=self.offset[...])
        return parts

    def dequantize(self, dtype) -> jax.Array:
        """The (in, out) kernel in `dtype`, computed in float32 first."""
        return _dequantize(self._parts(), self.kind, self.block, jnp.dtype(dtype))

    def matmul(self, x: jax.Array, dtype) -> jax.Array:
        """x [n, in] @ kernel in `dtype`, the kernel dequantised inside a rematerialised block:
        the backward recomputes it from the codes instead of keeping every layer's kernel
        dequantised until then (which would cost more memory than the 16-bit model)."""
        return _dequantized_matmul(x, self._parts(), self.kind, self.block, jnp.dtype(dtype))


def _dequantize(parts: dict[str, jax.Array], kind: str, block: int, dtype) -> jax.Array:
    kernel = nf4_dequantize(parts, block) if kind == "nf4" else int8_dequantize(parts)
    return kernel.astype(dtype)


@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _dequantized_matmul(x: jax.Array, parts: dict[str, jax.Array], kind: str, block: int,
                        dtype) -> jax.Array:
    return jnp.dot(x, _dequantize(parts, kind, block, dtype))
