"""A frozen projection kernel kept quantised and dequantised inside the matmul: NF4 or int8
quantised here, or a GGUF file's own blocks (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K).

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

from jaxcult.models.gguf_formats import FORMATS, gguf_dequantize, kernel_parts
from jaxcult.models.products import matmul
from jaxcult.models.quant_formats import (
    int8_dequantize,
    int8_quantize,
    nf4_dequantize,
    nf4_quantize,
)

KINDS = ("nf4", "int8")
GGUF_KINDS = tuple(FORMATS)
_QUANTIZE = {"nf4": jax.jit(nf4_quantize, static_argnums=(1, 2)),
             "int8": jax.jit(lambda kernel, _block, _double: int8_quantize(kernel),
                             static_argnums=(1, 2))}


class QuantizedWeight(nnx.Variable):
    """A quantised frozen weight's codes or scales."""


class QuantizedKernel(nnx.Module):
    """The codes and scales (`parts`, each with its logical axes) of one (in, out) kernel of
    `kind`; `dequantize(dtype)` gives it back. Build one with `quantize_kernel` (NF4, int8) or
    `gguf_kernel` (a GGUF file's blocks)."""

    def __init__(self, parts: dict, part_axes: dict[str, tuple | None], kind: str,
                 shape: tuple[int, int], axes: tuple[str, str], block: int = 0) -> None:
        self.kind, self.block, self.shape, self.axes = kind, block, tuple(shape), axes
        self.part_names = tuple(sorted(parts))
        for name in self.part_names:
            setattr(self, name, QuantizedWeight(parts[name], axes=part_axes[name]))

    def _parts(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in self.part_names}

    def dequantize(self, dtype) -> jax.Array:
        """The (in, out) kernel in `dtype`, computed in float32 first."""
        return _dequantize(self._parts(), self.kind, self.block, jnp.dtype(dtype))

    def matmul(self, x: jax.Array, dtype) -> jax.Array:
        """x [n, in] @ kernel in `dtype`, the kernel dequantised inside a rematerialised block:
        the backward recomputes it from the codes instead of keeping every layer's kernel
        dequantised until then (which would cost more memory than the 16-bit model)."""
        return _dequantized_matmul(x, self._parts(), self.kind, self.block, jnp.dtype(dtype))


def quantize_kernel(kernel: jax.Array | jax.ShapeDtypeStruct, axes: tuple[str, str], kind: str,
                    block: int = 64, double: bool = False) -> QuantizedKernel:
    """An (in, out) kernel (or a plan's shape) quantised to NF4 (blocks of `block` inputs,
    `double` quantisation of the scales) or int8."""
    if kind not in KINDS:
        raise ValueError(f"unknown quantisation {kind!r}; known: {', '.join(KINDS)}")
    quantize = (functools.partial(nf4_quantize, block=block, double=double) if kind == "nf4"
                else int8_quantize)
    parts = (jax.eval_shape(quantize, kernel) if isinstance(kernel, jax.ShapeDtypeStruct)
             else _QUANTIZE[kind](kernel, block, double))
    part_axes = ({"codes": axes, "absmax": axes, "absmax2": (None,), "offset": ()} if kind == "nf4"
                 else {"codes": axes, "absmax": (axes[1],)})
    return QuantizedKernel(parts, part_axes, kind, kernel.shape, axes, block)


def gguf_kernel(kind: str, fields: dict, shape: tuple[int, int], axes: tuple[str, str],
                place=jnp.asarray) -> QuantizedKernel:
    """A GGUF tensor's fields (`jaxcult.hub.gguf_blocks.GGUFBlocks.fields`) as the (in, out)
    kernel of `shape` they encode; `place(array, axes)` puts each part on its devices."""
    parts = kernel_parts(kind, fields)
    return QuantizedKernel({name: place(value, axes) for name, value in parts.items()},
                           dict.fromkeys(parts, axes), kind, shape, axes)


def _dequantize(parts: dict[str, jax.Array], kind: str, block: int, dtype) -> jax.Array:
    if kind == "nf4":
        kernel = nf4_dequantize(parts, block)
    elif kind == "int8":
        kernel = int8_dequantize(parts)
    else:
        kernel = gguf_dequantize(parts, kind)
    return kernel.astype(dtype)


@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _dequantized_matmul(x: jax.Array, parts: dict[str, jax.Array], kind: str, block: int,
                        dtype) -> jax.Array:
    return matmul(x, _dequantize(parts, kind, block, dtype), dtype)
