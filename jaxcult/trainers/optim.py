"""Masked per-group optimizers with PyTorch `requires_grad` semantics.

Every group gets its own state of the wrapped optax optimizer. On each update, a frozen
group's parameters and its whole optimizer state (moments, and the step count that drives
Adam's bias correction) are kept bit-identical, so its count starts when it is unfrozen, as
with per-parameter PyTorch optimizers. `adam_count: global` instead sets every group's count
to the global step before updating. The learning rate is injected per step from the global
step, like a PyTorch LR scheduler.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcult.config import OptimizerConfig

Groups = dict[str, Any]


def lr_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Constant or linear decay to zero, each with optional linear warmup."""
    if config.lr_schedule == "constant":
        main = optax.constant_schedule(config.lr)
    else:
        main = optax.linear_schedule(config.lr, 0.0, max(total_steps - config.warmup_steps, 1))
    if config.warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, config.lr, config.warmup_steps)
    return optax.join_schedules([warmup, main], [config.warmup_steps])


def base_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The per-group optimizer; its learning rate is a hyperparameter set every step."""
    def make(learning_rate):
        if config.name == "adamw":
            return optax.adamw(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                               weight_decay=config.weight_decay)
        if config.name == "adam":
            return optax.adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
        if config.name == "sgd":
            return optax.sgd(learning_rate)
        return optax.adafactor(learning_rate)

    return optax.inject_hyperparams(make)(learning_rate=config.lr)


def _set_counts(state: Any, count: jax.Array) -> Any:
    """Replace every optax `count` field (Adam's bias-correction step), however deeply nested."""
    if hasattr(state, "_fields"):
        fields = {name: _set_counts(getattr(state, name), count) for name in state._fields}
        if "count" in fields:
            fields["count"] = jnp.asarray(count, state.count.dtype)
        return type(state)(**fields)
    if isinstance(state, dict):
        return {key: _set_counts(value, count) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_set_counts(value, count) for value in state)
    return state


class MaskedGroupOptimizer:
    """Pure functions `init(params)` and `update(grads, state, params, mask, lr, step)`."""

    def __init__(self, config: OptimizerConfig, group_names: list[str]) -> None:
        self.inner = base_optimizer(config)
        self.names = list(group_names)
        self.global_count = config.adam_count == "global"

    def init(self, params: Groups) -> Groups:
        """Per-group states; leaves are made strongly typed so the first update's output has
        exactly the input's types (a weak-typed scalar would trigger a second compilation)."""
        states = {name: self.inner.init(params[name]) for name in self.names}
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), states)

    def update(self, grads: Groups, state: Groups, params: Groups, mask: jax.Array,
               lr: jax.Array, step: jax.Array) -> tuple[Groups, Groups]:
        new_params, new_state = {}, {}
        for index, name in enumerate(self.names):
            group_state = state[name]
            hyper = group_state.hyperparams
            group_state = group_state._replace(hyperparams={
                **hyper, "learning_rate": jnp.asarray(lr, hyper["learning_rate"].dtype)})
            if self.global_count:
                group_state = _set_counts(group_state, step)
            updates, updated_state = self.inner.update(grads[name], group_state, params[name])
            active = mask[index]
            stepped = optax.apply_updates(params[name], updates)
            new_params[name] = jax.tree.map(lambda new, old: jnp.where(active, new, old),
                                            stepped, params[name])
            new_state[name] = jax.tree.map(lambda new, old: jnp.where(active, new, old),
                                           updated_state, state[name])
        return new_params, new_state
