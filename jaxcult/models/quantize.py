"""`quantize_projections`: keep a frozen backbone's projections in NF4 or int8 (QLoRA-style).

Every `Dense` of the model except those named in `skip` (by default the output projection
`lm_head`, which bitsandbytes' 4-bit loading also leaves in 16 bits) gets a `QuantizedKernel`;
embeddings and norms keep their dtype. LoRA factors and adapters then train on top in float32,
reading each quantised kernel dequantised to the compute dtype. An abstract model (shapes only)
gets abstract codes and scales, so a plan sees the quantised sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx
from jax.sharding import Mesh

from jaxcult.errors import UserError
from jaxcult.models.layers import Dense
from jaxcult.models.quantized import QuantizedKernel, QuantizedWeight
from jaxcult.sharding import Rules, place_variables


@dataclass(frozen=True)
class Quantization:
    """`kind` nf4 or int8; NF4's `block` (weights per scale) and `double` quantisation."""

    kind: str
    block: int = 64
    double: bool = False
    skip: tuple[str, ...] = ("lm_head",)


def _skipped(path: str, skip: tuple[str, ...]) -> bool:
    return any(path == name or path.endswith("." + name) for name in skip)


def quantized_paths(model: nnx.Module) -> list[str]:
    """Module paths of the projections whose kernels are quantised."""
    return [".".join(str(p) for p in path) for path, module in nnx.iter_modules(model)
            if isinstance(module, Dense) and module.quantized]


def quantize_projections(model: nnx.Module, settings: Quantization, mesh: Mesh | None = None,
                         rules: Rules | None = None) -> list[str]:
    """Quantise every projection outside `settings.skip` in place; returns their paths. With
    `mesh`, codes and scales are placed as the kernels' logical axes ask."""
    targets = [(".".join(str(p) for p in path), module) for path, module in nnx.iter_modules(model)
               if isinstance(module, Dense) and not module.quantized]
    targets = [(path, dense) for path, dense in targets if not _skipped(path, settings.skip)]
    if not targets:
        raise UserError(f"model.quantize: no projection of this model is left to quantise "
                        f"(model.quantize_skip: {list(settings.skip)})")
    for path, dense in targets:
        fan_in = dense.kernel_shape[0]
        if settings.kind == "nf4" and (fan_in % settings.block or settings.block % 2):
            raise UserError(f"model.quantize_block_size: {settings.block} does not divide the "
                            f"{fan_in} inputs of {path} into blocks of an even size")
        kernel = dense.kernel.get_value()   # an array, or shapes only in a plan
        dense.kernel = QuantizedKernel(kernel, dense.kernel_axes, settings.kind, settings.block,
                                       settings.double)
    if mesh is not None:
        state = nnx.state(model, QuantizedWeight)
        if not any(isinstance(v.get_value(), jax.ShapeDtypeStruct)
                   for v in nnx.to_flat_state(state).leaves):
            nnx.update(model, place_variables(state, mesh, rules or {}))
    return [path for path, _ in targets]
