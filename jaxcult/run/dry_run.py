"""`jaxcult train --dry-run`: the mesh, each group's sharding and a per-device memory estimate.

A model given as an HF directory is planned from its config.json alone: its shapes, never its
weights (which need not be there), so a paper-size model is planned on any machine."""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.peft.groups import format_group_table
from jaxcult.run.build import ModelParts, build_run
from jaxcult.run.plan_figures import activation_bytes, tokens_per_device
from jaxcult.run.single import total_steps
from jaxcult.sharding import axes_of, logical_to_spec, make_mesh
from jaxcult.tasks import Task


def dry_run(config: RunConfig) -> str:
    """The mesh, each group's sharding and a per-device memory estimate, as a report; trains
    nothing."""
    mesh = make_mesh(config.mesh)
    built = build_run(config, shapes_only=True)
    parts, data = built.parts, built.data
    steps = total_steps(config, len(data.train) // config.trainer.batch_size)
    lines = [f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {jax.default_backend()} "
             f"device(s)", format_group_table(parts.counts, parts.total_params)]
    estimate = memory_estimate(config, built.plugins.task, parts, mesh)
    lines.append("per-device memory estimate:")
    lines += [f"  {name:<22} {value / 2**20:10.1f} MiB"
              for name, value in estimate["per_device_bytes"].items()]
    lines.append("parameter shardings per group (logical axes -> mesh axes, tensor count):")
    for group, specs in estimate["specs"].items():
        lines.append(f"  {group}:")
        lines += [f"    {spec:<44} x{count}" for spec, count in specs.items()]
    lines.append(f"train examples: {len(data.train)}, steps: {steps}, languages: "
                 f"{', '.join(data.tests)}")
    lines.append("XLA's own per-device figures for this step: jaxcult plan CONFIG [--devices N]")
    return "\n".join(lines)


def memory_estimate(config: RunConfig, task: Task, parts: ModelParts, mesh) -> dict:
    """Bytes per device for frozen and trainable parameters, Adam state and activations.

    Parameter and optimizer bytes follow each tensor's sharding; activations are `jaxcult
    plan`'s analytic estimate (`plan_figures.activation_bytes`): what the backward keeps per
    layer and token for the tokens one device computes per micro-step (whole rows: at least one
    per device), logits included.
    """
    rules = config.mesh.rules
    specs: dict[str, Counter] = {}

    def shard_bytes(state, group: str) -> int:
        total = 0
        for _, variable in nnx.to_flat_state(state):
            spec = logical_to_spec(axes_of(variable), variable.shape, rules, mesh)
            specs.setdefault(group, Counter())[f"{axes_of(variable)} -> {tuple(spec)}"] += 1
            split = 1
            for axis in spec:
                for name in ([axis] if isinstance(axis, str) else list(axis or [])):
                    split *= mesh.shape[name]
            total += int(np.prod(variable.shape)) * jnp.dtype(variable.dtype).itemsize // split
        return total

    frozen = shard_bytes(parts.frozen, "frozen backbone")
    trainable = sum(shard_bytes(parts.params[g], g) for g in parts.groups)
    batch = task.plan_batch(config.trainer.batch_size, config.model.max_length)
    activations = activation_bytes(config, task, parts.architecture,
                                   tokens_per_device(config, batch, mesh), config.model.remat)
    return {"per_device_bytes": {"frozen parameters": frozen, "trainable parameters": trainable,
                                 "optimizer state (Adam)": 2 * trainable,
                                 "activations (estimate)": activations},
            "specs": {group: dict(counter) for group, counter in specs.items()}}
