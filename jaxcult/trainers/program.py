"""Pure train / eval / Fisher steps of any task family.

The model is split into a graph definition, the frozen backbone (never differentiated) and
the trainable parameters grouped by name. `ModelProgram` holds what only runs the model
(evaluation, Fisher): it needs no optimizer. `TrainProgram` adds the jitted train step, compiled
once with pinned in/out shardings. `TrainState` holds everything that changes; its `mask` (one
bool per group) decides which groups the optimizer touches, so a schedule changing the mask
never triggers recompilation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxcult import fisher
from jaxcult.eval import Evaluator
from jaxcult.peft.groups import layer_index
from jaxcult.sharding import replicated_outputs, shardings_of
from jaxcult.tasks import Task
from jaxcult.truncation import group_positions, rematerialising, truncating


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, Any]   # group name -> nnx.State of that group's parameters
    opt_state: Any
    mask: jax.Array          # [num_groups] bool, in group order: the only copy of the mask
    rng: jax.Array
    track: jax.Array         # bool: this step needs every group's gradient (in-step tr(F))


def init_state(params: dict[str, Any], optimizer: optax.GradientTransformation, mask: jax.Array,
               seed: int, track: bool = False) -> TrainState:
    """Step 0 of a run (jitted optimizer init: states land beside their parameters)."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=jax.jit(optimizer.init)(params), mask=jnp.asarray(mask),
                      rng=jax.random.key(seed), track=jnp.asarray(track))


def stack_trees(trees: list) -> Any:
    """Equal-structured pytrees stacked on a new leading axis (vectorised seeds)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@dataclass(frozen=True)
class StepOptions:
    """How a train step treats its batch and its gradients (besides the optimizer)."""

    grad_accum: int = 1
    skip_nonfinite: bool = False          # keep parameters and state on a non-finite step
    inject_nonfinite_at: int | None = None  # testing aid: make this step's loss NaN
    track_in_step: bool = False           # also return per-group squared batch gradients / B
    #                                       (of every group on steps whose state has `track`)
    truncate_backward: bool = False       # skip the backward below the lowest group it needs
    fixed_groups: tuple[str, ...] = ()    # never differentiated (learning-rate multiplier 0)
    remat: str = "none"                   # per-layer rematerialisation policy (model.remat)


class ModelProgram:
    """Running the model without training it: outputs, evaluation statistics, Fisher traces."""

    def __init__(self, task: Task, evaluator: Evaluator, graphdef: nnx.GraphDef,
                 groups: Sequence[str]) -> None:
        self.task, self.evaluator = task, evaluator
        self.graphdef, self.groups = graphdef, list(groups)
        self.positions = group_positions(self.groups, layer_index)
        self.eval_step = jax.jit(self._eval_step)
        self._seed_eval_steps: dict[bool, Callable] = {}
        self._fishers: dict[str, Callable] = {}

    def outputs(self, params: dict, frozen: Any, batch: dict, dropout_key=None) -> jax.Array:
        model = nnx.merge(self.graphdef, *params.values(), frozen)
        return self.task.forward(model, batch, dropout_key)

    def log_probs(self, frozen: Any) -> fisher.LogProbFn:
        return lambda params, batch: self.task.log_probs(self.outputs(params, frozen, batch), batch)

    def _eval_step(self, params, frozen, batch) -> dict[str, jax.Array]:
        model = nnx.merge(self.graphdef, *params.values(), frozen)
        outputs = self.evaluator.device_outputs(self.task.evaluation_outputs(model, batch), batch)
        return replicated_outputs(outputs)  # every process reads the whole result

    def seeds_eval_step(self, shared_frozen: bool) -> Callable:
        """`eval_step` vmapped over a leading seed axis of the parameters (and of the frozen
        backbone unless it is shared); every set sees the same batch."""
        if shared_frozen not in self._seed_eval_steps:
            axes = (0, None if shared_frozen else 0, None)
            self._seed_eval_steps[shared_frozen] = jax.jit(jax.vmap(self._eval_step, in_axes=axes))
        return self._seed_eval_steps[shared_frozen]

    def _one_batch_fisher(self, estimator: str) -> Callable:
        def one_batch(params, frozen, batch, key):
            return fisher.batch_trace(estimator, self.log_probs(frozen), params, batch, key,
                                      self.groups)
        return one_batch

    def make_fisher(self, estimator: str) -> Callable:
        """Jitted (params, frozen, batch, key) -> per-group tr(F) of one batch (one per
        estimator and program, so sessions sharing the program compile it once)."""
        if estimator not in self._fishers:
            self._fishers[estimator] = jax.jit(self._one_batch_fisher(estimator))
        return self._fishers[estimator]

    def seeds_fisher(self, estimator: str, shared_frozen: bool) -> Callable:
        """`make_fisher` vmapped over a leading seed axis of the parameters, batches and keys
        (and of the frozen backbone unless it is shared)."""
        axes = (0, None if shared_frozen else 0, 0, 0)
        return jax.jit(jax.vmap(self._one_batch_fisher(estimator), in_axes=axes))


def micro_batches(batch: dict, accum: int) -> dict:
    """[rows, ...] -> [accum, rows / accum, ...] where micro-batch i takes rows i, i + accum,
    ...: a device's own rows (the batch is split over the mesh in contiguous blocks) spread
    over the micro-batches, so each micro-step runs on every device without gathering rows
    from the others."""
    return jax.tree.map(lambda x: x.reshape(-1, accum, *x.shape[1:]).swapaxes(0, 1), batch)


def step_shardings(state: TrainState, frozen: Any, batch_sharding, batch_keys: Sequence[str]
                   ) -> dict[str, Any]:
    """jit arguments pinning the train step to the current placement: the output state keeps
    exactly the input layout (donation reuses the buffers), the frozen backbone stays where it
    is, and batches arrive split over the mesh's batch axes."""
    state_shardings = shardings_of(state)
    return {"in_shardings": (state_shardings, shardings_of(frozen),
                             {k: batch_sharding for k in batch_keys}),
            "out_shardings": (state_shardings, None)}


class TrainProgram:
    """The jitted train step of one run: `train_step(state, frozen, batch) -> (state, metrics)`."""

    def __init__(self, model: ModelProgram, optimizer: optax.GradientTransformationExtraArgs,
                 lr: optax.Schedule, options: StepOptions = StepOptions(),
                 shardings: dict[str, Any] | None = None) -> None:
        self.model, self.optimizer, self.lr, self.options = model, optimizer, lr, options
        self.train_step = jax.jit(self._train_step, donate_argnums=(0,), **(shardings or {}))

    def precompile(self, state: TrainState, frozen: Any, batches: Sequence[dict],
                   workers: int) -> None:
        """Compile the train step for each of `batches`' shapes now, `workers` compilations at
        a time: XLA compiles each program on one host thread, so a run whose batches come in
        several length buckets would otherwise compile them one after the other, each when
        its first batch arrives. Tracing stays on this thread (it reads this thread's mesh
        and activation rules); the compiled programs land in the step's own cache, so the
        loop's calls find them."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            compiling = [pool.submit(self.train_step.lower(state, frozen, batch).compile)
                         for batch in batches]
            for program in compiling:
                program.result()

    def _loss(self, params, frozen, batch, key, mask):
        context = (truncating(params, mask, self.model.positions) if mask is not None
                   else contextlib.nullcontext())
        with context, rematerialising(self.options.remat):
            return self.model.task.loss(self.model.outputs(params, frozen, batch, key), batch)

    def _grads(self, params, frozen, batch, key, mask):
        """Loss, accuracy and gradients; with `mask` (truncated backward) the gradients of
        groups outside it may be zero instead of their value. Fixed groups (learning-rate
        multiplier 0) are not differentiated at all: their gradient is zero."""
        fixed = {g: params[g] for g in self.options.fixed_groups}
        order = list(params)

        def loss_of(free, *rest):
            return self._loss({g: fixed[g] if g in fixed else free[g] for g in order}, *rest,
                              mask=mask)

        free = {g: v for g, v in params.items() if g not in fixed}
        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        accum = self.options.grad_accum
        if accum == 1:
            result, grads = grad_fn(free, frozen, batch, key)
        else:
            micro = micro_batches(batch, accum)

            def body(carry, inputs):
                micro_batch, index = inputs
                (loss, acc), grads = grad_fn(free, frozen, micro_batch,
                                             jax.random.fold_in(key, index))
                return jax.tree.map(jnp.add, carry, ((loss, acc), grads)), None

            shapes = jax.eval_shape(grad_fn, free, frozen, jax.tree.map(lambda x: x[0], micro), key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
            result, grads = jax.tree.map(lambda x: x / accum, total)
        return result, {g: jax.tree.map(jnp.zeros_like, fixed[g]) if g in fixed else grads[g]
                        for g in order}

    def _train_step(self, state: TrainState, frozen, batch, backward: jax.Array | None = None):
        """One step. `backward` (default: the state's mask and tracked groups) names the groups
        whose gradient the step must compute; vectorised seeds pass the union over seeds, so
        the truncated backward branches on one level for all of them."""
        options, groups = self.options, self.model.groups
        rng, key = jax.random.split(state.rng)
        if backward is None:
            backward = state.mask | state.track
        (loss, accuracy), grads = self._grads(state.params, frozen, batch, key,
                                              backward if options.truncate_backward else None)
        if options.inject_nonfinite_at is not None:
            poison = state.step + 1 == options.inject_nonfinite_at
            loss = jnp.where(poison, jnp.nan, loss)
            grads = jax.tree.map(lambda g: jnp.where(poison, jnp.nan, g), grads)
        trained = {name: jax.tree.map(lambda g, i=i: jnp.where(state.mask[i], g, 0.0), grads[name])
                   for i, name in enumerate(groups)}
        grad_norm = optax.tree.norm(trained)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params,
                                                   mask=state.mask, step=state.step)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if options.skip_nonfinite:
            params = jax.tree.map(lambda n, o: jnp.where(finite, n, o), params, state.params)
            opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), opt_state, state.opt_state)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        extra = accuracy if isinstance(accuracy, dict) else {"accuracy": accuracy}  # a task's
        metrics = {"loss": loss, **extra, "grad_norm": grad_norm,           # own metrics
                   "lr": self.lr(state.step), "finite": finite}
        if options.track_in_step:  # squared batch gradient per group / B, before masking
            size = batch[self.model.task.batch_keys[0]].shape[0]
            metrics["batch_trace"] = fisher.group_sq_norms(grads, groups) / size
        return new_state, metrics
