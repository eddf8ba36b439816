"""Pure train / eval / Fisher steps of any task family, jitted once.

The model is split into a graph definition, the frozen backbone (never differentiated) and
the trainable parameters grouped by name. `TrainState` holds everything that changes; its
`mask` (one bool per group) decides which groups the optimizer touches, so a schedule changing
the mask never triggers recompilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxcult import fisher
from jaxcult.sharding import shardings_of
from jaxcult.tasks import Task
from jaxcult.trainers.optim import MaskedGroupOptimizer


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, Any]   # group name -> nnx.State of that group's parameters
    opt_state: dict[str, Any]
    mask: jax.Array          # [num_groups] bool, in group order
    rng: jax.Array


class TrainProgram:
    """The jitted functions of one run, closed over the static model structure and the task."""

    def __init__(self, task: Task, graphdef: nnx.GraphDef, groups: list[str],
                 optimizer: MaskedGroupOptimizer, lr_fn: optax.Schedule,
                 max_grad_norm: float | None, grad_accum: int, skip_nonfinite: bool,
                 inject_nonfinite_at: int | None = None, track_in_step: bool = False) -> None:
        self.task, self.graphdef, self.groups = task, graphdef, groups
        self.optimizer, self.lr_fn = optimizer, lr_fn
        self.max_grad_norm, self.grad_accum = max_grad_norm, grad_accum
        self.skip_nonfinite = skip_nonfinite
        self.inject_nonfinite_at = inject_nonfinite_at
        self.track_in_step = track_in_step
        self.train_step = jax.jit(self._train_step, donate_argnums=(0,))
        self.eval_sums = jax.jit(self._eval_sums)
        self.eval_outputs = jax.jit(self.outputs)

    def pin_shardings(self, state: TrainState, frozen: Any, batch_sharding) -> None:
        """Re-jit the step with in/out shardings equal to the current placement of `state`.

        Output state keeps exactly the input layout (donation reuses the buffers), the frozen
        backbone stays where it is, and batches arrive split over the mesh's batch axes.
        """
        state_shardings = shardings_of(state)
        frozen_shardings = shardings_of(frozen)
        batch_shardings = {k: batch_sharding for k in self.task.batch_keys}
        self.train_step = jax.jit(self._train_step, donate_argnums=(0,),
                                  in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                                  out_shardings=(state_shardings, None))

    # -- model application --------------------------------------------------------------------
    def outputs(self, params: dict, frozen: Any, batch: dict, dropout_key=None) -> jax.Array:
        model = nnx.merge(self.graphdef, *params.values(), frozen)
        return self.task.forward(model, batch, dropout_key)

    def log_probs(self, frozen: Any) -> fisher.LogProbFn:
        return lambda params, batch: self.task.log_probs(self.outputs(params, frozen, batch), batch)

    def _loss(self, params, frozen, batch, key):
        return self.task.loss(self.outputs(params, frozen, batch, key), batch)

    def _eval_sums(self, params, frozen, batch, valid):
        return self.task.eval_sums(self.outputs(params, frozen, batch), batch, valid)

    # -- training -----------------------------------------------------------------------------
    def _grads(self, state: TrainState, frozen, batch, key):
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        if self.grad_accum == 1:
            return grad_fn(state.params, frozen, batch, key)
        micro = jax.tree.map(lambda x: x.reshape(self.grad_accum, -1, *x.shape[1:]), batch)

        def body(carry, inputs):
            micro_batch, index = inputs
            (loss, acc), grads = grad_fn(state.params, frozen, micro_batch, jax.random.fold_in(key, index))
            total = jax.tree.map(jnp.add, carry, ((loss, acc), grads))
            return total, None

        zeros = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, state.params))
        total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(self.grad_accum)))
        return jax.tree.map(lambda x: x / self.grad_accum, total)

    def _train_step(self, state: TrainState, frozen, batch):
        rng, key = jax.random.split(state.rng)
        (loss, accuracy), grads = self._grads(state, frozen, batch, key)
        if self.inject_nonfinite_at is not None:
            poison = state.step + 1 == self.inject_nonfinite_at
            loss = jnp.where(poison, jnp.nan, loss)
            grads = jax.tree.map(lambda g: jnp.where(poison, jnp.nan, g), grads)
        raw_grads = grads
        grads = {name: jax.tree.map(lambda g, i=i: jnp.where(state.mask[i], g, 0.0), grads[name])
                 for i, name in enumerate(self.groups)}
        grad_norm = optax.tree.norm(grads)
        if self.max_grad_norm is not None:
            scale = jnp.minimum(1.0, self.max_grad_norm / (grad_norm + 1e-6))
            grads = jax.tree.map(lambda g: g * scale, grads)
        lr = self.lr_fn(state.step)
        params, opt_state = self.optimizer.update(grads, state.opt_state, state.params, state.mask,
                                                  lr, state.step)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if self.skip_nonfinite:
            params = jax.tree.map(lambda n, o: jnp.where(finite, n, o), params, state.params)
            opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), opt_state, state.opt_state)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm, "lr": lr,
                   "finite": finite}
        if self.track_in_step:  # squared batch gradient per group / B, before masking
            metrics["batch_trace"] = fisher.group_sq_norms(raw_grads, self.groups) / batch["labels"].shape[0]
        return new_state, metrics

    # -- Fisher ---------------------------------------------------------------------------------
    def make_fisher(self, estimator: str) -> Callable:
        """Jitted (params, frozen, batch, key) -> per-group tr(F) of one batch."""
        def one_batch(params, frozen, batch, key):
            return fisher.batch_trace(estimator, self.log_probs(frozen), params, batch, key,
                                      self.groups)

        return jax.jit(one_batch)
