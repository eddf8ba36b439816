"""`quantize_projections`: keep a frozen backbone's projections in NF4 or int8 (QLoRA-style).

Every `Dense` of the model except those named in `skip` (by default the output projection
`lm_head`, which bitsandbytes' 4-bit loading also leaves in 16 bits) gets a `QuantizedKernel`;
embedding tables too with `embeddings` (bitsandbytes keeps them in 16 bits: the default), norms
never. LoRA factors and adapters then train on top in float32,
reading each quantised kernel dequantised to the compute dtype. An abstract model (shapes only)
gets abstract codes and scales, so a plan sees the quantised sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcult.errors import UserError
from jaxcult.models.layers import Dense, Embed
from jaxcult.models.quantized import QuantizedKernel, QuantizedWeight
from jaxcult.sharding import Rules, place_variables


@dataclass(frozen=True)
class Quantization:
    """`kind` nf4 or int8; NF4's `block` (weights per scale) and `double` quantisation."""

    kind: str
    block: int = 64
    double: bool = False
    skip: tuple[str, ...] = ("lm_head",)
    embeddings: bool = False


def _skipped(path: str, skip: tuple[str, ...]) -> bool:
    return any(path == name or path.endswith("." + name) for name in skip)


def quantized_paths(model: nnx.Module) -> list[str]:
    """Module paths of the projections whose kernels are quantised."""
    return [".".join(str(p) for p in path) for path, module in nnx.iter_modules(model)
            if isinstance(module, (Dense, Embed)) and module.quantized]


def quantized_parameter_count(model: nnx.Module) -> int:
    """Weights held quantised (counted as the parameters they stand for)."""
    kernels = [m.kernel if isinstance(m, Dense) else m.embedding for _, m in nnx.iter_modules(model)
               if isinstance(m, (Dense, Embed)) and m.quantized]
    return sum(int(np.prod(kernel.shape)) for kernel in kernels)


def _targets(model: nnx.Module, settings: Quantization) -> list[tuple[str, Dense | Embed]]:
    kinds = (Dense, Embed) if settings.embeddings else (Dense,)
    found = [(".".join(str(p) for p in path), module) for path, module in nnx.iter_modules(model)
             if isinstance(module, kinds) and not module.quantized]
    return [(path, module) for path, module in found if not _skipped(path, settings.skip)]


def _transpose(value):
    """An array's transpose, or a plan's transposed shape."""
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape[::-1], value.dtype)
    return value.T


def _quantized(path: str, kernel, axes: tuple[str, str], settings: Quantization) -> QuantizedKernel:
    """`kernel` (an array, or shapes only in a plan) quantised as `settings` ask."""
    fan_in = kernel.shape[0]
    if settings.kind == "nf4" and (fan_in % settings.block or settings.block % 2):
        raise UserError(f"model.quantize_block_size: {settings.block} does not divide the "
                        f"{fan_in} inputs of {path} into blocks of an even size")
    return QuantizedKernel(kernel, axes, settings.kind, settings.block, settings.double)


def quantize_projections(model: nnx.Module, settings: Quantization, mesh: Mesh | None = None,
                         rules: Rules | None = None) -> list[str]:
    """Quantise every projection outside `settings.skip` in place; returns their paths. With
    `mesh`, codes and scales are placed as the kernels' logical axes ask."""
    targets = _targets(model, settings)
    if not targets:
        raise UserError(f"model.quantize: no projection of this model is left to quantise "
                        f"(model.quantize_skip: {list(settings.skip)})")
    for path, module in targets:
        if isinstance(module, Embed):   # blocks along the features: quantise the transpose
            table = module.embedding
            module.embedding = _quantized(path, _transpose(table.get_value()),
                                          tuple(table.get_metadata()["axes"])[::-1], settings)
        else:
            module.kernel = _quantized(path, module.kernel.get_value(), module.kernel_axes, settings)
    if mesh is not None:
        state = nnx.state(model, QuantizedWeight)
        if not any(isinstance(v.get_value(), jax.ShapeDtypeStruct)
                   for v in nnx.to_flat_state(state).leaves):
            nnx.update(model, place_variables(state, mesh, rules or {}))
    return [path for path, _ in targets]
