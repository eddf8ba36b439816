"""Turn a name -> numpy tensor mapping into an NNX model, strictly and directly onto devices.

The model is first built abstractly (`nnx.eval_shape`: no memory, no random init); each
tensor is then converted, shape-checked and `device_put` with the sharding its logical axes
call for on the target mesh, so a large backbone never exists unsharded on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcult import models
from jaxcult.errors import UserError
from jaxcult.hub.gguf_blocks import GGUFBlocks
from jaxcult.models.keytable import KeyMap
from jaxcult.models.quantize import (
    Quantization,
    install_quantized,
    quantization_targets,
    quantize_value,
)
from jaxcult.models.quantized import QuantizedKernel, gguf_kernel
from jaxcult.sharding import Rules, axes_of, named_sharding


def path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def abstract_model(config) -> tuple[nnx.GraphDef, tuple]:
    """Graph definition and flat (path, abstract Variable) pairs, without allocating weights.
    Tracing a 30-layer model's construction takes seconds, so a process that loads the same
    architecture again (training, then exporting, one adapter per culture) reuses the result."""
    try:
        hash(config)
    except TypeError:  # a user config with unhashable fields: traced every time
        return _abstract_model(config)
    return _abstract_model_cached(config)


def _abstract_model(config) -> tuple[nnx.GraphDef, tuple]:
    abstract = nnx.eval_shape(lambda: models.build(config))
    graphdef, state = nnx.split(abstract)
    return graphdef, tuple(nnx.to_flat_state(state))


_abstract_model_cached = functools.lru_cache(maxsize=4)(_abstract_model)


def abstract_module(config) -> nnx.Module:
    """A model of `config` whose parameters are shapes only (nothing allocated or read): the
    structure PEFT modules and a head are added to when the weights come from elsewhere."""
    graphdef, flat = abstract_model(config)  # merged as copies: `merge` keeps the cached Variables
    return nnx.merge(graphdef, nnx.from_flat_state([(path, variable.replace()) for path, variable in flat]))


class Subset(Mapping[str, np.ndarray]):
    """The named tensors of a (lazy) mapping, read only when asked for."""

    def __init__(self, tensors: Mapping[str, np.ndarray], names: list[str]) -> None:
        self._tensors, self._names = tensors, names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._tensors[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def convert_tensors(tensors: Mapping[str, np.ndarray], keymap: KeyMap, source: str,
                    unused: list[str] | None = None) -> dict[str, np.ndarray]:
    """HF names -> NNX paths (transposing Linear weights); unknown names are errors. The names
    the architecture leaves to others (a task model's head) are appended to `unused`."""
    converted: dict[str, np.ndarray] = {}
    for name in tensors:
        canonical = keymap.canonical(name)
        found = keymap.to_nnx(canonical)
        if found is None:
            if keymap.is_ignored(canonical):
                if unused is not None:
                    unused.append(name)
                continue
            raise UserError(f"{source}: unexpected tensor {name!r} (no parameter of this "
                            f"architecture corresponds to it)")
        path, transpose = found
        array = tensors[name]
        array = array if isinstance(array, GGUFBlocks) else np.asarray(array)
        converted[path] = array.T if transpose else array
    return converted


def assemble(config, arrays: Mapping[str, np.ndarray], source: str, *,
             dtype=None, mesh: Mesh | None = None, rules: Rules | None = None,
             quantization: Quantization | None = None) -> nnx.Module:
    """Fill an abstract model with `arrays` (keyed by NNX path); strict on missing/mis-shaped.
    With `quantization`, each selected kernel is quantised as soon as it is placed, so the
    model never exists whole in its float dtype."""
    graphdef, flat = abstract_model(config)
    targets = quantization_targets(abstract_module(config), quantization) if quantization else {}
    kernels = {}
    expected = {path_str(p) for p, _ in flat}
    missing = sorted(expected - set(arrays))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"{source}: missing tensor(s) for {', '.join(missing[:3])}{more}")
    filled = []
    for path, variable in flat:
        key = path_str(path)
        array = arrays[key]
        if tuple(array.shape) != tuple(variable.shape):
            raise UserError(f"{source}: tensor for {key} has shape {tuple(array.shape)}, "
                            f"expected {tuple(variable.shape)}")
        if isinstance(array, GGUFBlocks):
            if key in targets:  # kept in the file's own blocks
                kernels[key] = _gguf_kernel(array, axes_of(variable), targets[key], mesh, rules)
                filled.append((path, variable.replace(value=jnp.zeros((), variable.dtype))))
                continue
            array = array.dequantized()
        target_dtype = jnp.dtype(dtype) if dtype is not None else variable.dtype
        host = np.asarray(array, dtype=np.float32).astype(target_dtype)
        if mesh is not None:
            value = jax.device_put(host, named_sharding(axes_of(variable), host.shape, rules or {}, mesh))
        else:
            value = jnp.asarray(host)
        if key in targets and quantization.kind != "gguf":   # a placeholder until the
            #  quantised kernel takes its place (model.quantize: gguf keeps float tensors float)
            kernels[key] = quantize_value(key, value, axes_of(variable), targets[key], quantization)
            value = jnp.zeros((), value.dtype)
        filled.append((path, variable.replace(value=value)))
    model = nnx.merge(graphdef, nnx.from_flat_state(filled))
    install_quantized(model, kernels, mesh, rules)
    return model


def _gguf_kernel(blocks: GGUFBlocks, axes, transposed: bool, mesh: Mesh | None,
                 rules: Rules | None) -> QuantizedKernel:
    """A GGUF weight kept in its blocks: the (in, out) kernel of a projection, or of an
    embedding table's transpose (`transposed`), both with the blocks along `in`."""
    axes = tuple(axes)[::-1] if transposed else tuple(axes)

    def place(value: np.ndarray, part_axes) -> jax.Array:
        if mesh is None:
            return jnp.asarray(value)
        return jax.device_put(value, named_sharding(part_axes, value.shape, rules or {}, mesh))

    return gguf_kernel(blocks.kind, blocks.fields(), (blocks.row_length, blocks.raw.shape[0]),
                       axes, place)


def load_tensors(config, tensors: Mapping[str, np.ndarray], source: str, **kw
                 ) -> tuple[nnx.Module, Mapping[str, np.ndarray]]:
    """An HF-named tensor mapping (safetensors, GGUF after renaming, ...) -> (model, the
    tensors it left to others, by their checkpoint names, read lazily)."""
    keymap = models.architecture_of(config).keymap
    unused: list[str] = []
    arrays = convert_tensors(tensors, keymap, source, unused)
    if getattr(config, "tie_word_embeddings", False):
        arrays.pop("lm_head.kernel", None)
    return assemble(config, arrays, source, **kw), Subset(tensors, unused)
