"""Learning-dynamics measurements as pure functions of a loss and trainable parameter groups.

`loss(params, batch) -> scalar` is the training loss (no dropout) of the whole parameter dict
`{group: params}`; each measure returns one number per group, in group order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Loss = Callable[[dict, dict], jax.Array]


def sq_norm(tree: Any) -> jax.Array:
    return sum(jnp.vdot(x, x).real for x in jax.tree.leaves(tree)) if jax.tree.leaves(tree) \
        else jnp.zeros(())


def mean_grads(loss: Loss, params: dict, batches: Sequence[dict]) -> dict:
    """The gradient of the mean loss over `batches` (equal-sized batches)."""
    grads = [jax.grad(loss)(params, b) for b in batches]
    return jax.tree.map(lambda *g: sum(g) / len(g), *grads)


def group_norms(tree: dict, groups: Sequence[str]) -> np.ndarray:
    return np.sqrt(np.array([float(sq_norm(tree[g])) for g in groups]))


def update_ratios(before: dict, after: dict, groups: Sequence[str]) -> np.ndarray:
    """||θ_after − θ_before|| / ||θ_before|| per group (0 for a group with zero weights)."""
    deltas = group_norms(jax.tree.map(jnp.subtract, after, before), groups)
    sizes = group_norms(before, groups)
    return np.divide(deltas, sizes, out=np.zeros_like(deltas), where=sizes > 0)


@partial(jax.jit, static_argnums=(0, 1))
def _hvp(loss: Loss, group: str, params: dict, batch: dict, v):
    """H v for one group's Hessian block; compiled once per (loss, group) and reused."""
    def restricted(p):
        return loss({**params, group: p}, batch)

    return jax.jvp(jax.grad(restricted), (params[group],), (v,))[1]


def hessian_extremes(loss: Loss, params: dict, group: str, batch: dict, *, iters: int = 20,
                     key: jax.Array) -> tuple[float, float]:
    """(λ_max, ρ) of the Hessian of the loss with respect to one group (the others fixed): the
    largest eigenvalue and the spectral radius, from Hessian-vector products (forward over
    reverse). ρ is ||Hv|| of power iteration on H (robust to ± pairs of equal magnitude, which
    make the plain Rayleigh quotient oscillate); λ_max is the Rayleigh quotient of power
    iteration on H + ρI, whose spectrum is non-negative with λ_max + ρ on top."""
    def hvp(v):
        return _hvp(loss, group, params, batch, v)

    def normalise(v):
        norm = jnp.sqrt(sq_norm(v))
        return jax.tree.map(lambda x: x / norm, v)

    def dot(a, b):
        return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))

    leaves, treedef = jax.tree.flatten(params[group])
    keys = jax.random.split(key, len(leaves))
    start = normalise(treedef.unflatten([jax.random.normal(k, x.shape, x.dtype)
                                         for k, x in zip(keys, leaves)]))
    v, radius = start, 0.0
    for _ in range(iters):
        hv = hvp(v)
        radius = float(jnp.sqrt(sq_norm(hv)))
        v = normalise(hv)
    u, top = start, 0.0
    for _ in range(iters):
        hu = hvp(u)
        top = dot(u, hu)
        u = normalise(jax.tree.map(lambda a, b: a + radius * b, hu, u))
    return top, radius


def noise_scale(batch_grads: Sequence[dict], groups: Sequence[str], batch_size: int
                ) -> dict[str, np.ndarray]:
    """The simple gradient noise scale B_simple = tr(Σ) / |G|² per group (McCandlish et al.
    2018, App. A) from k ≥ 2 gradients of batches of size B: with b = B and B_big = kB,
    |G|² ≈ (B_big |G_big|² − b E|G_b|²) / (B_big − b) and tr(Σ) ≈ (E|G_b|² − |G_big|²) /
    (1/b − 1/B_big), G_big being the mean of the k gradients. Also returns both estimates;
    B_simple is nan where the |G|² estimate is not positive (too few batches to tell)."""
    k = len(batch_grads)
    if k < 2:
        raise ValueError("the noise scale needs at least two batch gradients")
    small = np.mean([[float(sq_norm(g[name])) for name in groups] for g in batch_grads], axis=0)
    big_grad = jax.tree.map(lambda *g: sum(g) / k, *batch_grads)
    big = np.array([float(sq_norm(big_grad[name])) for name in groups])
    b, b_big = batch_size, k * batch_size
    grad_sq = (b_big * big - b * small) / (b_big - b)
    trace = (small - big) / (1 / b - 1 / b_big)
    simple = np.divide(trace, grad_sq, out=np.full_like(trace, np.nan), where=grad_sq > 0)
    return {"b_simple": simple, "grad_sq": grad_sq, "trace_cov": trace}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n examples ([n, d1], [n, d2]):
    ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F) after centring each feature (Kornblith et al. 2019)."""
    x = np.asarray(x, np.float64) - np.mean(x, axis=0)
    y = np.asarray(y, np.float64) - np.mean(y, axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the real tokens: hidden [rows, len, dim], mask [rows, len] -> [rows, dim]."""
    weights = mask.astype(jnp.float32)[..., None]
    return (hidden.astype(jnp.float32) * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
