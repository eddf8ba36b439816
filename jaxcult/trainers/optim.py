"""The masked per-group optimizer, as one optax chain with PyTorch `requires_grad` semantics.

`masked_optimizer(config, groups, lr)` is an `optax.GradientTransformationExtraArgs` whose
`update(grads, state, params, mask=..., step=...)` takes the boolean mask of trainable groups
and the global step as extra arguments:

1. `zero_frozen`: a frozen group's gradient is zero, so it does not count towards clipping;
2. `clip_by_total_norm`: PyTorch's `clip_grad_norm_` (scale = min(1, max / (norm + 1e-6)));
3. `masked_groups`: every group has its own state of the inner optimizer (AdamW, ...). A frozen
   group gets a zero update and keeps its whole state bit-identical (moments and the step count
   that drives Adam's bias correction), so its count starts when it is unfrozen, as with
   per-parameter PyTorch optimizers. `adam_count: global` sets every counter to the global step
   before updating instead. The learning rate follows the global step, like a PyTorch scheduler.

Groups with the same parameter shapes (one adapter or LoRA pair per layer) share one stacked
state and one vmapped update, so the compiled program holds one update per distinct shape, not
one per group (60 for LoRA q/v on a 30-layer decoder).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcult.config import OptimizerConfig
from jaxcult.errors import UserError

Groups = dict[str, Any]
# optimizer states holding a step counter (Adam's bias correction, schedules, Adafactor)
COUNTER_STATES = (optax.ScaleByAdamState, optax.ScaleByScheduleState, optax.FactoredState,
                  optax.InjectStatefulHyperparamsState)


def warmup_steps(config: OptimizerConfig, total_steps: int) -> int:
    """`warmup_steps`, or ceil(warmup_ratio x total steps) as transformers' Trainer counts it."""
    if config.warmup_ratio is not None:
        return math.ceil(config.warmup_ratio * total_steps)
    return config.warmup_steps


def lr_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Constant or linear decay to zero, each with optional linear warmup."""
    warmup = warmup_steps(config, total_steps)
    if config.lr_schedule == "constant":
        main = optax.constant_schedule(config.lr)
    else:
        main = optax.linear_schedule(config.lr, 0.0, max(total_steps - warmup, 1))
    if warmup == 0:
        return main
    ramp = optax.linear_schedule(0.0, config.lr, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def decayed(params: Any) -> Any:
    """Weight-decay mask that spares 1-D parameters (biases, norm scales)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def adamw_hf(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
             weight_decay: float = 0.0, mask: Any = None) -> optax.GradientTransformation:
    """transformers' `optimization.AdamW` (correct_bias=True), which the FUN code trained with:
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)  (eps before the bias
    correction), then decoupled decay of the *updated* parameter, p <- p - lr * wd * p.
    `mask(params)` says which parameters decay (default: all)."""
    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros((), jnp.int32), mu=zeros, nu=zeros)

    def update(grads, state, params):
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        t = count.astype(jnp.float32)
        step = learning_rate * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        adam = jax.tree.map(lambda m, v: -step * m / (jnp.sqrt(v) + eps), mu, nu)
        decays = mask(params) if mask is not None else jax.tree.map(lambda _: True, params)
        updates = jax.tree.map(
            lambda a, p, d: a - learning_rate * weight_decay * (p + a) if d else a,
            adam, params, decays)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def base_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """The per-group optimizer; its learning rate is a hyperparameter set every step."""
    mask = decayed if config.decay_params == "matrices" else None

    def make(learning_rate):
        if config.name == "adamw":
            return optax.adamw(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                               weight_decay=config.weight_decay, mask=mask)
        if config.name == "adamw_hf":
            return adamw_hf(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                            weight_decay=config.weight_decay, mask=mask)
        if config.name == "adam":
            return optax.adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
        if config.name == "sgd":
            return optax.sgd(learning_rate)
        return optax.adafactor(learning_rate)

    return optax.inject_hyperparams(make)(learning_rate=config.lr)


def zero_frozen(groups: Sequence[str], scales: Sequence[float] | None = None
                ) -> optax.GradientTransformationExtraArgs:
    """Zero the gradient of every group whose `mask` entry is False or whose learning-rate
    multiplier is 0 (frozen, as `requires_grad=False`: it does not count towards clipping)."""
    open_ = [s > 0 for s in scales] if scales is not None else [True] * len(groups)

    def update(updates, state, params=None, *, mask, **extra):
        del params, extra
        return {name: jax.tree.map(lambda g, i=i: jnp.where(mask[i] & open_[i], g, 0.0),
                                   updates[name])
                for i, name in enumerate(groups)}, state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def clip_by_total_norm(max_norm: float) -> optax.GradientTransformation:
    """PyTorch's `clip_grad_norm_`: scale every gradient by min(1, max_norm / (norm + 1e-6))."""
    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + 1e-6))
        return jax.tree.map(lambda g: g * scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _shape_buckets(tree: Groups, groups: Sequence[str]) -> list[list[str]]:
    """Groups partitioned by the shapes and dtypes of their leaves (in group order); the
    parameter names inside a group (its tree structure) do not matter."""
    buckets: dict[Any, list[str]] = {}
    for name in groups:
        signature = tuple((x.shape, x.dtype) for x in jax.tree.leaves(tree[name]))
        buckets.setdefault(signature, []).append(name)
    return list(buckets.values())


def _stack(tree: Groups, bucket: list[str]) -> list[jax.Array]:
    """The leaves of the bucket's groups, each stacked along a new leading (group) axis."""
    leaves = [jax.tree.leaves(tree[name]) for name in bucket]
    return [jnp.stack(column) for column in zip(*leaves)]


def _unstack(stacked: list[jax.Array], like: Groups, bucket: list[str]) -> Groups:
    return {name: jax.tree.unflatten(jax.tree.structure(like[name]), [x[i] for x in stacked])
            for i, name in enumerate(bucket)}


def _set_counters(state: Any, count: jax.Array) -> Any:
    """Every step counter in an optimizer state (found by its state type) set to `count`."""
    def set_count(node):
        if not isinstance(node, COUNTER_STATES):
            return node
        inner = {f: _set_counters(getattr(node, f), count) for f in node._fields if f != "count"}
        return node._replace(count=jnp.asarray(count, node.count.dtype), **inner)

    return jax.tree.map(set_count, state, is_leaf=lambda x: isinstance(x, COUNTER_STATES))


def group_lr_scales(multipliers: dict[str, float], groups: Sequence[str]) -> list[float]:
    """`optimizer.group_lr` as one multiplier per group (first matching pattern wins); a
    pattern that matches no group is an error, never silently ignored."""
    for pattern, value in multipliers.items():
        if value < 0:
            raise UserError(f"optimizer.group_lr.{pattern}: expected a multiplier >= 0, found {value}")
        if not any(fnmatch.fnmatchcase(g, pattern) for g in groups):
            raise UserError(f"optimizer.group_lr: {pattern!r} matches no parameter group (groups: "
                            f"{', '.join(groups)})")
    return [next((v for p, v in multipliers.items() if fnmatch.fnmatchcase(g, p)), 1.0)
            for g in groups]


def masked_groups(inner: optax.GradientTransformation, groups: Sequence[str],
                  lr: optax.Schedule, *, global_count: bool = False,
                  scales: Sequence[float] | None = None) -> optax.GradientTransformationExtraArgs:
    """Per-group states of `inner` (stacked by shape); frozen groups keep theirs untouched;
    `scales` multiply each group's learning rate."""
    groups = list(groups)
    factors = jnp.asarray(scales if scales is not None else [1.0] * len(groups), jnp.float32)

    def init(params: Groups) -> dict[str, Any]:
        states = {f"shape_{k}": jax.vmap(inner.init)(_stack(params, bucket))
                  for k, bucket in enumerate(_shape_buckets(params, groups))}
        # strongly typed leaves, so the first update's output has exactly the input's types
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), states)

    def update(updates: Groups, state: dict[str, Any], params: Groups | None = None, *,
               mask: jax.Array, step: jax.Array, **extra) -> tuple[Groups, dict[str, Any]]:
        del extra
        rate = lr(step)

        def one(grads, group_state, group_params, active, factor):
            hyper = group_state.hyperparams
            current = group_state._replace(hyperparams={
                **hyper, "learning_rate": jnp.asarray(rate * factor, hyper["learning_rate"].dtype)})
            if global_count:
                current = _set_counters(current, step)
            active = active & (factor > 0)
            new_updates, new_state = inner.update(grads, current, group_params)
            new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
            kept = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, group_state)
            return new_updates, kept

        out: Groups = {}
        new_state = {}
        for k, bucket in enumerate(_shape_buckets(updates, groups)):
            key = f"shape_{k}"
            if scales is not None and all(scales[groups.index(n)] == 0 for n in bucket):
                new_state[key] = state[key]  # fixed groups: no update computed at all
                out.update({n: jax.tree.map(jnp.zeros_like, updates[n]) for n in bucket})
                continue
            index = jnp.asarray([groups.index(n) for n in bucket])
            stacked, new_state[key] = jax.vmap(one)(
                _stack(updates, bucket), state[key], _stack(params, bucket), mask[index],
                factors[index])
            out.update(_unstack(stacked, updates, bucket))
        return {name: out[name] for name in groups}, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def group_state(state: dict[str, Any], params: Groups, groups: Sequence[str], name: str) -> Any:
    """One group's state inside a `masked_groups` state, taken out of its shape's stack."""
    for k, bucket in enumerate(_shape_buckets(params, list(groups))):
        if name in bucket:
            return jax.tree.map(lambda x, i=bucket.index(name): x[i], state[f"shape_{k}"])
    raise KeyError(name)  # (its moments are lists of leaves, in the group's leaf order)


def masked_optimizer(config: OptimizerConfig, groups: Sequence[str], lr: optax.Schedule
                     ) -> optax.GradientTransformationExtraArgs:
    """The run's optimizer: zero frozen gradients, clip, per-group masked updates."""
    clip = [clip_by_total_norm(config.max_grad_norm)] if config.max_grad_norm is not None else []
    scales = group_lr_scales(config.group_lr, groups)
    return optax.chain(zero_frozen(groups, scales), *clip,
                       masked_groups(base_optimizer(config), groups, lr,
                                     global_count=config.adam_count == "global", scales=scales))
