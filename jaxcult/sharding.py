"""Device meshes and the mapping from logical axis names to mesh axes.

Parameters carry logical names (`embed`, `mlp`, `heads`, ...); a rule table from the config maps
each name to a mesh axis, several axes, or None (replicated). A mesh axis is used at most once
per array, and an axis that does not divide the dimension falls back to replication for that
dimension, so one rule table serves every model size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcult.config import MeshConfig
from jaxcult.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Mapping[str, Sequence[str] | str | None]
Axes = tuple[str | None, ...]


def axes_of(variable) -> Axes | None:
    """Logical axis names of an `nnx.Variable` (None when it has none)."""
    return variable.get_metadata().get("axes")


def mesh_shape(config: MeshConfig, device_count: int) -> tuple[int, int, int]:
    """Resolve -1 to the remaining devices and check the product equals the device count."""
    sizes = [config.data, config.fsdp, config.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if device_count % known:
            raise UserError(
                f"mesh: fixed axes multiply to {known}, which does not divide the "
                f"{device_count} available devices")
        sizes[sizes.index(-1)] = device_count // known
    if int(np.prod(sizes)) != device_count:
        raise UserError(
            f"mesh: data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {int(np.prod(sizes))} "
            f"devices, but {device_count} are available (use -1 for one axis to take the rest)")
    return tuple(sizes)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes, so XLA's SPMD partitioner propagates shardings."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(axes: Sequence[str | None] | None, shape: Sequence[int], rules: Rules,
                    mesh: Mesh) -> PartitionSpec:
    """PartitionSpec for an array with logical `axes`; unknown names and misfits replicate."""
    if axes is None:
        return PartitionSpec()
    used: set[str] = set()
    spec: list = []
    for name, dim in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        mesh_axes = [target] if isinstance(target, str) else list(target or [])
        mesh_axes = [a for a in mesh_axes if a not in used and mesh.shape.get(a, 1) > 1]
        size = int(np.prod([mesh.shape[a] for a in mesh_axes])) if mesh_axes else 1
        if not mesh_axes or dim % size:
            spec.append(None)
            continue
        used.update(mesh_axes)
        spec.append(mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes))
    return PartitionSpec(*spec)


def named_sharding(axes, shape, rules: Rules, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, rules, mesh))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
    """Leading (batch) dimension split over the `batch` rule's axes, the rest replicated."""
    batch_axes = rules.get("batch") or ()
    batch_axes = [batch_axes] if isinstance(batch_axes, str) else list(batch_axes)
    batch_axes = [a for a in batch_axes if mesh.shape.get(a, 1) > 1]
    first = None if not batch_axes else (batch_axes[0] if len(batch_axes) == 1 else tuple(batch_axes))
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules, *,
                 replicated: bool = False) -> dict[str, jax.Array]:
    """One global array per column from this process's rows (`make_array_from_process_local_data`).

    Training batches are split over the batch axes (each process contributes its slice);
    `replicated=True` is for evaluation/Fisher batches that every process holds in full.
    """
    def place(value: np.ndarray) -> jax.Array:
        sharding = (NamedSharding(mesh, PartitionSpec()) if replicated
                    else batch_sharding(mesh, rules, value.ndim))
        return jax.make_array_from_process_local_data(sharding, value)

    return {key: place(value) for key, value in local.items()}


def host_inputs(local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Inputs every process holds in full (evaluation and Fisher batches) as jit arguments:
    replicated over the active mesh when several processes run, plain arrays otherwise."""
    mesh = jax.sharding.get_mesh()
    if jax.process_count() == 1 or mesh.empty:
        return {key: jnp.asarray(value) for key, value in local.items()}
    return global_batch(local, mesh, {}, replicated=True)


def place_variables(state, mesh: Mesh, rules: Rules):
    """Put every `nnx.Variable` of an NNX state on `mesh` as its logical axes ask."""
    from flax import nnx

    def place(variable):
        value = variable[...]
        sharding = named_sharding(axes_of(variable), value.shape, rules, mesh)
        return variable.replace(value=jax.device_put(value, sharding))

    return jax.tree.map(place, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def on_mesh(tree, mesh: Mesh):
    """Leaves not yet laid out over `mesh` (e.g. scalar optimizer counts) become replicated on it."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def fix(x):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return x
        return jax.device_put(x, replicated)

    return jax.tree.map(fix, tree)


def shardings_of(tree):
    """The sharding of every array leaf (to pin jit in/out shardings to the current layout)."""
    return jax.tree.map(lambda x: x.sharding, tree)


_BATCH_AXES: ContextVar[tuple[str, ...]] = ContextVar("batch_axes", default=("data", "fsdp"))


@contextmanager
def activation_rules(rules: Rules) -> Iterator[None]:
    """Within this block, `constrain_batch` splits activations over the `batch` rule's axes."""
    batch = rules.get("batch") or ()
    token = _BATCH_AXES.set((batch,) if isinstance(batch, str) else tuple(batch))
    try:
        yield
    finally:
        _BATCH_AXES.reset(token)


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pin an activation at a block boundary: batch dim over the batch axes, the rest replicated.

    Without a mesh context (`jax.set_mesh`) this is the identity, so single-device code and
    tests never see it; with one it keeps XLA from resharding activations between blocks.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = [a for a in _BATCH_AXES.get() if mesh.shape.get(a, 1) > 1]
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not axes or x.shape[0] % size:
        return x
    first = axes[0] if len(axes) == 1 else tuple(axes)
    return jax.lax.with_sharding_constraint(x, PartitionSpec(first, *([None] * (x.ndim - 1))))


def replicated_outputs(tree):
    """Pin outputs that the host reads in full (evaluation results) as replicated on the
    active mesh, so every process can fetch them; the identity without a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return tree
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, PartitionSpec()), tree)


def check_batch_divisible(batch_size: int, mesh: Mesh, rules: Rules, what: str) -> None:
    parts = batch_sharding(mesh, rules, 1).spec[0]
    axes = [parts] if isinstance(parts, str) else list(parts or [])
    size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if batch_size % size:
        raise UserError(f"{what}: {batch_size} is not divisible by the {size} devices the batch "
                        f"is split over (mesh axes {', '.join(axes)})")
