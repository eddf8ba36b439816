"""Rebuild a finished run's model with its best parameters (for export and re-evaluation)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.checkpoint import Checkpointer
from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.rundir import RunDir
from jaxcult.trainers.loop import build_run
from jaxcult.trainers.optim import MaskedGroupOptimizer
from jaxcult.trainers.steps import TrainState


def load_run_model(run_dir: Path):
    """(config, model with the best checkpointed parameters) of a run directory."""
    run = RunDir(run_dir)
    if not run.config.exists():
        raise UserError(f"{run_dir}: not a jaxcult run directory (no config.yaml)")
    config = load_config(run.config)
    parts, _ = build_run(config)
    optimizer = MaskedGroupOptimizer(config.optimizer, parts.groups)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=parts.params,
                       opt_state=optimizer.init(parts.params),
                       mask=jnp.zeros(len(parts.groups), bool), rng=jax.random.key(0))
    checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
    try:
        _, device, _ = checkpointer.restore_latest({"state": state, "best": state.params})
    finally:
        checkpointer.close()
    model = nnx.merge(parts.graphdef, *device["best"].values(), parts.frozen)
    return config, model
