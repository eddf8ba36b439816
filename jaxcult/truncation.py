"""Truncated backward: skip the backward of the layers below the lowest trainable group.

PyTorch's autograd stops below the lowest parameter that requires a gradient; a masked JAX
step differentiates everything and throws most of it away. Here each layer of a model runs
under a `jax.custom_vjp` whose forward keeps the `jax.vjp` residuals and whose backward is a
`lax.switch` on a *traced* level, so the step still compiles once while a schedule opens groups:

- 0: nothing at or below this layer trains: no backward at all (zeros);
- 1: only this layer's own parameters train: their gradients, no activation gradient (the
  matmuls that propagate the gradient downwards become dead code in that branch);
- 2: something below trains: the full backward of the layer.

The train step activates it with `truncating(plan)` around the loss; outside that context (or
at evaluation, generation, Fisher) layers run as plain calls. `rematerialising(policy)` (the
`model.remat` setting) makes each layer keep only its input for the backward and recompute
the rest (`layer`), or keep its matmul outputs too (`layer_save_dots`): activation memory then
stops growing with the work inside a layer; with the truncated backward the two combine.
A layer's "trainable" parameters are the arrays the step differentiates, recognised by
identity, so no path convention is needed. Gradients of the trainable groups are those of the
plain step (the same operations; only reassociation-free dead code is removed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx


class Keys(Protocol):
    """What a layer's dropout-key source offers (models.layers.KeySplitter): a copy that draws
    the same keys, and moving past the keys a copy drew."""

    def copy(self) -> Keys: ...

    def skip_to(self, other: Any) -> None: ...


ABOVE, BELOW = 1 << 30, -1  # positions of groups outside the layer stack (head; embeddings etc.)


@dataclass(frozen=True)
class TruncationPlan:
    """Which arrays train (`trainable`: ids of the differentiated leaves) and where: `mask`
    [num_groups] bool and `positions` [num_groups] int (layer index, ABOVE or BELOW)."""

    trainable: frozenset[int]
    mask: jax.Array
    positions: jax.Array

    def level(self, index: int) -> jax.Array:
        below = jnp.any(self.mask & (self.positions < index))
        here = jnp.any(self.mask & (self.positions == index))
        return jnp.where(below, 2, jnp.where(here, 1, 0)).astype(jnp.int32)


def group_positions(groups: Sequence[str], layer_index: Callable[[str], int | None]) -> list[int]:
    """Layer position of each group: its layer, ABOVE for the head, BELOW for anything else
    (embeddings, modules trained in full: conservatively, they need every layer's backward)."""
    return [ABOVE if g == "head" else BELOW if (i := layer_index(g)) is None else i for g in groups]


_PLAN: ContextVar[TruncationPlan | None] = ContextVar("jaxcult_truncation", default=None)

REMAT_POLICIES = {"layer": jax.checkpoint_policies.nothing_saveable,
                  "layer_save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
_REMAT: ContextVar[str] = ContextVar("jaxcult_remat", default="none")


def current_remat() -> str:
    """The rematerialisation policy of the step being traced ("none" outside one)."""
    return _REMAT.get()


@contextlib.contextmanager
def rematerialising(policy: str) -> Iterator[None]:
    """Run layers rematerialised (`policy` a key of REMAT_POLICIES, or "none") while tracing."""
    if policy != "none" and policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; known: none, {', '.join(REMAT_POLICIES)}")
    token = _REMAT.set(policy)
    try:
        yield
    finally:
        _REMAT.reset(token)


@contextlib.contextmanager
def truncating(params, mask: jax.Array, positions: Sequence[int]) -> Iterator[None]:
    """Run layers with truncated backward while tracing the loss of `params` (the pytree the
    step differentiates)."""
    plan = TruncationPlan(frozenset(id(leaf) for leaf in jax.tree.leaves(params)),
                          jnp.asarray(mask), jnp.asarray(positions, jnp.int32))
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


def _zeros(like: list[jax.ShapeDtypeStruct]) -> list[jax.Array]:
    return [jnp.zeros(s.shape, s.dtype) for s in like]


def _switched_backward(pullback, level: jax.Array, leaves: list[jax.ShapeDtypeStruct],
                       x: jax.ShapeDtypeStruct, cotangent):
    def nothing(g):
        return _zeros(leaves), _zeros([x])[0]

    def own(g):
        return pullback(g)[0], _zeros([x])[0]

    def full(g):
        return pullback(g)

    return jax.lax.switch(level, (nothing, own, full), cotangent)


def call_layer(layer: nnx.Module, index: int, x: jax.Array, keys: Keys,
               apply: Callable[[nnx.Module, jax.Array, Keys], object]):
    """`apply(layer, x, keys)`, with the truncated backward and rematerialisation when the
    train step asked for them.

    `apply` returns the layer's output (an array or a tuple whose first element is the next
    hidden state; the rest receives no gradient). Dropout keys are drawn exactly as in a plain
    call, so the masks and the numbers are the same.
    """
    plan, remat = _PLAN.get(), _REMAT.get()
    if plan is None and remat == "none":
        return apply(layer, x, keys)
    differentiated = ((lambda _path, v: id(v.get_value()) in plan.trainable) if plan is not None
                      else (lambda _path, _v: True))
    graphdef, trainable, rest = nnx.split(layer, differentiated, ...)
    leaves, treedef = jax.tree.flatten(trainable)
    start = keys.copy()
    drawn: dict[str, Keys] = {}

    def run(leaves, x):
        layer_keys = start.copy()
        module = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
        out = apply(module, x, layer_keys)
        drawn["keys"] = layer_keys
        return out

    if remat != "none":
        run = jax.checkpoint(run, policy=REMAT_POLICIES[remat])
    out = run(leaves, x) if plan is None else _truncated(run, leaves, x, plan.level(index))
    keys.skip_to(drawn["keys"])
    return out


def _truncated(run: Callable, leaves: list[jax.Array], x: jax.Array, level: jax.Array):
    """`run(leaves, x)` whose backward is switched on `level` (module docstring)."""

    @jax.custom_vjp
    def block(leaves, x, level):
        return run(leaves, x)

    def forward(leaves, x, level):
        out, pullback = jax.vjp(run, leaves, x)
        return out, (pullback, level)

    shapes = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
    x_shape = jax.ShapeDtypeStruct(x.shape, x.dtype)

    def backward(residuals, cotangent):
        pullback, level = residuals
        d_leaves, d_x = _switched_backward(pullback, level, shapes, x_shape, cotangent)
        return d_leaves, d_x, None

    block.defvjp(forward, backward)
    return block(leaves, x, level)
