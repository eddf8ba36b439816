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
from jaxcult.models.quantized import QuantizedKernel, QuantizedWeight, quantize_kernel
from jaxcult.sharding import Rules, place_variables


@dataclass(frozen=True)
class Quantization:
    """`kind` nf4, int8 or gguf (a GGUF file's own blocks, kept as they load); NF4's `block`
    (weights per scale) and `double` quantisation."""

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
    found = [(path, module) for path, module in found if not _skipped(path, settings.skip)]
    if not found:
        raise UserError(f"model.quantize: no projection of this model is left to quantise "
                        f"(model.quantize_skip: {list(settings.skip)})")
    return found


def quantization_targets(model: nnx.Module, settings: Quantization) -> dict[str, bool]:
    """The variable path of every array `settings` quantise (a kernel, or an embedding table)
    -> whether it is quantised transposed (a table: blocks along its features)."""
    return {f"{path}.embedding" if isinstance(module, Embed) else f"{path}.kernel":
            isinstance(module, Embed) for path, module in _targets(model, settings)}


def quantize_value(path: str, value, axes: tuple[str, str], transposed: bool,
                   settings: Quantization) -> QuantizedKernel:
    """One array (or a plan's shape) quantised as `settings` ask; `path` names it in errors."""
    if transposed:
        value = (jax.ShapeDtypeStruct(value.shape[::-1], value.dtype)
                 if isinstance(value, jax.ShapeDtypeStruct) else value.T)
        axes = tuple(axes)[::-1]
    fan_in = value.shape[0]
    if settings.kind == "nf4" and (fan_in % settings.block or settings.block % 2):
        raise UserError(f"model.quantize_block_size: {settings.block} does not divide the "
                        f"{fan_in} inputs of {path.rsplit('.', 1)[0]} into blocks of an even size")
    return quantize_kernel(value, axes, settings.kind, settings.block, settings.double)


def install_quantized(model: nnx.Module, kernels: dict[str, QuantizedKernel], mesh: Mesh | None = None,
                      rules: Rules | None = None) -> None:
    """Put each quantised kernel where its variable path says; with `mesh`, place codes and
    scales as the kernels' logical axes ask."""
    modules = {".".join(str(p) for p in path): module for path, module in nnx.iter_modules(model)}
    for path, kernel in kernels.items():
        owner, attribute = path.rsplit(".", 1)
        setattr(modules[owner], attribute, kernel)
    if mesh is not None:
        state = nnx.state(model, QuantizedWeight)
        if not any(isinstance(v.get_value(), jax.ShapeDtypeStruct)
                   for v in nnx.to_flat_state(state).leaves):
            nnx.update(model, place_variables(state, mesh, rules or {}))


def quantize_projections(model: nnx.Module, settings: Quantization, mesh: Mesh | None = None,
                         rules: Rules | None = None) -> list[str]:
    """Quantise every projection outside `settings.skip` in place; returns their module
    paths. With `mesh`, codes and scales are placed as the kernels' logical axes ask."""
    variables = {".".join(str(p) for p in path): v
                 for path, v in nnx.to_flat_state(nnx.state(model))}
    kernels = {path: quantize_value(path, variables[path].get_value(),
                                    variables[path].get_metadata()["axes"], transposed, settings)
               for path, transposed in quantization_targets(model, settings).items()}
    install_quantized(model, kernels, mesh, rules)
    return [path.rsplit(".", 1)[0] for path in kernels]
