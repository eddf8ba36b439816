"""The layer stack as one `lax.scan` over stacked parameters (`model.scan_layers`).

An unrolled stack of N layers is traced, optimised and compiled N times, so compile time grows
with depth (minutes for a 32-layer 8B model on a pod). `stack_layers` turns N layers of one
structure into a `LayerStack`: a single layer module whose arrays carry a leading `layers` axis
(MaxText's scanned layers), and `run_layers` runs it as one `lax.scan` whose body is compiled
once. The numbers are the unrolled model's: the same operations per layer, the same dropout
keys (the key counter is carried through the scan), rematerialisation applied to the body.

Layers built, loaded, quantised and given PEFT modules one by one (key tables, AdapterHub and
PEFT files keep per-layer paths) are stacked afterwards; `unstack_layers` turns a stacked
model back into per-layer modules (exports). Layers that differ in structure (Gemma's sliding
windows on some layers, adapters left out of some layers) cannot share a scan body and are
refused by name. What a scanned stack gives up: per-layer parameter groups (the stack's
trainable arrays are one group, so schedules that open layers one by one cannot run) and the
truncated backward inside the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxcult.models.layers import KeySplitter
from jaxcult.sharding import constrain_batch
from jaxcult.truncation import REMAT_POLICIES, call_layer, current_remat

LAYERS_AXIS = "layers"  # logical name of the stacked axis (no rule maps it: replicated)

Apply = Callable[[nnx.Module, jax.Array, KeySplitter], jax.Array]


class StackError(ValueError):
    """Layers that cannot be stacked (the message names the first difference)."""


class LayerStack(nnx.Module):
    """N layers of one structure as one module (`stacked`: every array [N, ...])."""

    def __init__(self, stacked: nnx.Module, count: int) -> None:
        self.stacked, self.count = stacked, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> nnx.Module:
        """Layer `index` as its own module (slices of the stacked arrays)."""
        if not -self.count <= index < self.count:
            raise IndexError(f"layer {index} of {self.count}")
        return self._layers([index % self.count])[0]

    def __iter__(self) -> Iterator[nnx.Module]:
        return iter(self._layers(range(self.count)))

    def _layers(self, indices) -> list[nnx.Module]:
        """The layers at `indices`, each with its slice of every array and the axes it had
        before stacking (the stack split once for all of them)."""
        graphdef, state = nnx.split(self.stacked)
        flat = list(nnx.to_flat_state(state))
        layers = []
        for i in indices:
            sliced = []
            for path, variable in flat:
                metadata = dict(variable.get_metadata())
                if metadata.get("axes") is not None:
                    metadata["axes"] = tuple(metadata["axes"][1:])
                sliced.append((path, type(variable)(_slice(variable.get_value(), i), **metadata)))
            layers.append(nnx.merge(graphdef, nnx.from_flat_state(sliced)))
        return layers

    def scan(self, x: jax.Array, keys: KeySplitter, apply: Apply, keep: bool = False
             ) -> tuple[jax.Array, jax.Array | None]:
        """`apply(layer, x, keys)` through every layer as one `lax.scan`; returns the output
        and, with `keep`, every layer's output [N, ...]."""
        graphdef, state = nnx.split(self.stacked)
        key = keys.key

        def body(carry, layer_state):
            h, count = carry
            layer_keys = KeySplitter(key, count)
            h = constrain_batch(apply(nnx.merge(graphdef, layer_state), h, layer_keys))
            return (h, jnp.asarray(layer_keys.count, jnp.int32)), (h if keep else None)

        remat = current_remat()
        if remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[remat])
        start = jnp.asarray(keys.count, jnp.int32)
        (x, count), kept = jax.lax.scan(body, (x, start), state)
        keys.continue_from(count)
        return x, kept


def _slice(array, index: int):
    if isinstance(array, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(array.shape[1:], array.dtype)
    return array[index]


def run_layers(layers: Sequence[nnx.Module] | LayerStack, x: jax.Array, keys: KeySplitter,
               apply: Apply, keep: bool = False) -> tuple[jax.Array, list[jax.Array] | None]:
    """Every layer in order (scanned when stacked); with `keep`, each layer's output too."""
    if isinstance(layers, LayerStack):
        x, kept = layers.scan(x, keys, apply, keep)
        return x, (list(kept) if keep else None)
    outputs = []
    for i, layer in enumerate(layers):
        x = constrain_batch(call_layer(layer, i, x, keys, apply))
        outputs.append(x)
    return x, (outputs if keep else None)


def _stacked_axes(variable: nnx.Variable) -> dict:
    metadata = dict(variable.get_metadata())
    if metadata.get("axes") is not None:
        metadata["axes"] = (LAYERS_AXIS, *metadata["axes"])
    return metadata


def _stack(values: list):
    first = values[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(values), *first.shape), first.dtype)
    sharding = getattr(first, "sharding", None)
    if isinstance(sharding, NamedSharding):  # the layer axis whole on every device
        spec = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
        return jax.jit(lambda *xs: jnp.stack(xs), out_shardings=spec)(*values)
    return jnp.stack(values)


def stack_layers(layers: Sequence[nnx.Module], what: str = "layers") -> LayerStack:
    """One `LayerStack` of `layers` (same class, settings and PEFT modules on every one).
    Arrays are stacked one parameter at a time and the per-layer copies released as they
    go, so the extra memory is one parameter's worth, not a second model."""
    graphdef = nnx.graphdef(layers[0])
    for i, layer in enumerate(layers[1:], 1):
        if nnx.graphdef(layer) != graphdef:
            raise StackError(f"{what}.{i} differs in structure from {what}.0 "
                             f"({_difference(layers[0], layer)}); a scan runs one body for every layer")
    flats = [list(nnx.to_flat_state(nnx.state(layer))) for layer in layers]
    stacked = []
    for j, (path, variable) in enumerate(flats[0]):
        column = [flat[j][1] for flat in flats]
        value = _stack([v.get_value() for v in column])
        for v in column:  # the per-layer copy is no longer needed
            if not isinstance(v.get_value(), jax.ShapeDtypeStruct):
                v.set_value(jnp.zeros((), v.dtype))
        stacked.append((path, type(variable)(value, **_stacked_axes(variable))))
    return LayerStack(nnx.merge(graphdef, nnx.from_flat_state(stacked)), len(layers))


def _difference(first: nnx.Module, other: nnx.Module) -> str:
    """A readable first difference between two layers: a sub-module or a setting."""
    ours = {".".join(map(str, p)): m for p, m in nnx.iter_modules(first)}
    theirs = {".".join(map(str, p)): m for p, m in nnx.iter_modules(other)}
    only_one = sorted(ours.keys() ^ theirs.keys())
    if only_one:
        return f"sub-module {only_one[0]!r} on one of them only"
    for path, module in ours.items():
        for name, value in sorted(vars(module).items()):
            theirs_value = getattr(theirs[path], name, None)
            if name.startswith("_") or isinstance(value, (nnx.Module, nnx.Variable, jax.Array)):
                continue
            if value != theirs_value:
                return f"{path + '.' if path else ''}{name}: {value!r} vs {theirs_value!r}"
    return "parameter shapes of a sub-module"


def unstack_layers(stack: LayerStack) -> nnx.List:
    """The per-layer modules of a stack (their arrays slices of it; axes as before stacking)."""
    return nnx.List(list(stack))


def unstack_model(model: nnx.Module) -> nnx.Module:
    """`model` with every `LayerStack` in it replaced by its per-layer modules (in place):
    what exports and per-layer tools read."""
    for _, module in list(nnx.iter_modules(model)):
        for name, value in list(vars(module).items()):
            if isinstance(value, LayerStack):
                setattr(module, name, unstack_layers(value))
    return model
