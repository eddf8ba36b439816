"""Per-group trace of the Fisher information,
tr(F)_g = sum_{theta in g} E_x E_y~p(y|x) (d log p(y|x) / d theta)^2.

Estimators (pure functions of the parameters: no model copy, optimizer untouched, dropout off):
- `sampled` (the paper's Eq. 1, default): per-example gradients via `vmap`, y sampled from the
  model's predictive distribution (example i draws with the key folded with i);
- `argmax_batch` (the official code): y = argmax, squared gradient of the batch-mean loss,
  divided by the batch size; with several outputs per example (QA's start and end) the mean
  runs over all of them, as the official code concatenates them along the batch;
- `sampled_batch` (Algorithm 2 as written): y sampled, otherwise as `argmax_batch`;
- `empirical`: per-example gradients at the gold labels.
`batch_trace` gives one batch's value and `combine` aggregates batches: the mean over batches
for the per-example estimators (E_x), the sum over batches for the batch-gradient ones (as the
official code accumulates them).
A task supplies `log_probs(params, batch) -> (log_probs [batch, *outputs, classes], weights)`:
one categorical per output position (classification and multiple choice: none extra; span QA:
start and end; causal LM: every token), `weights` [batch, *outputs] (or None) marking the
positions that count. An example's log-likelihood is the weighted sum over its positions, and
labels are sampled (or taken) independently per position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

LogProbFn = Callable[[dict, dict], tuple[jax.Array, jax.Array | None]]
ESTIMATORS = ("sampled", "argmax_batch", "sampled_batch", "empirical")
BATCH_ESTIMATORS = ("argmax_batch", "sampled_batch")


def group_sq_norms(grads: dict, order: Sequence[str]) -> jax.Array:
    """[num_groups] sum of squared gradient entries per group, in `order`.

    The order must be explicit: JAX rebuilds dicts with sorted keys, so the iteration order of a
    gradient (or of parameters inside `jit`) is not the caller's group order.
    """
    return jnp.stack([sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads[name]))
                      for name in order])


def _draw(estimator: str, log_probs: jax.Array, key: jax.Array) -> jax.Array:
    """Labels from the model's own (gradient-free) predictive distribution."""
    log_probs = jax.lax.stop_gradient(log_probs)
    if estimator == "argmax_batch":
        return jnp.argmax(log_probs, axis=-1)
    return jax.random.categorical(key, log_probs, axis=-1)


def _nll_cotangent(log_probs: jax.Array, weights: jax.Array | None, labels: jax.Array,
                   rows: int) -> jax.Array:
    """d(batch-mean NLL)/d(log_probs): over every output of every example when they weigh
    alike (QA's start and end rows, as the official code's `cat([start, end])`), else the
    weighted sum per example averaged over the `rows` examples (LM tokens under their mask)."""
    onehot = jax.nn.one_hot(labels, log_probs.shape[-1], dtype=log_probs.dtype)
    if weights is None:
        return -onehot / labels.size
    return -onehot * weights[..., None].astype(log_probs.dtype) / rows


def _per_example(log_probs: LogProbFn, params: dict, inputs: dict, gold: jax.Array | None,
                 key: jax.Array, order: Sequence[str]) -> jax.Array:
    """Mean over examples of per-group squared per-example gradients of log p(label | x); each
    example's label comes from its own forward pass (sampled) or is the gold one."""
    rows = next(iter(inputs.values())).shape[0]

    def single(example, index, label):
        one = jax.tree.map(lambda x: x[None], example)
        (lp, weights), pullback = jax.vjp(lambda p: log_probs(p, one), params)
        label = (_draw("sampled", lp, jax.random.fold_in(key, index)) if label is None
                 else label[None])
        # d log p(label | x) / d log_probs: the example's (weighted) sum over its positions
        cotangent = jax.nn.one_hot(label, lp.shape[-1], dtype=lp.dtype)
        if weights is not None:
            cotangent = cotangent * weights[..., None].astype(lp.dtype)
        zeros = None if weights is None else jnp.zeros_like(weights)
        return group_sq_norms(pullback((cotangent, zeros))[0], order)

    return jax.vmap(single)(inputs, jnp.arange(rows), gold).mean(0)


def batch_trace(estimator: str, log_probs: LogProbFn, params: dict, batch: dict,
                key: jax.Array, order: Sequence[str]) -> jax.Array:
    """Per-group tr(F) estimate from one batch ([num_groups], groups in `order`); see `combine`.

    Labels and gradients come from one forward pass (`jax.vjp`: the labels read its outputs
    under `stop_gradient`), never a forward for the labels plus a forward for the gradients."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if estimator == "sampled":
        return _per_example(log_probs, params, inputs, None, key, order)
    if estimator == "empirical":
        return _per_example(log_probs, params, inputs, batch["labels"], key, order)
    if estimator in BATCH_ESTIMATORS:
        (lp, weights), pullback = jax.vjp(lambda p: log_probs(p, inputs), params)
        labels = _draw(estimator, lp, key)
        rows = labels.shape[0]
        zeros = None if weights is None else jnp.zeros_like(weights)
        grads = pullback((_nll_cotangent(lp, weights, labels, rows), zeros))[0]
        return group_sq_norms(grads, order) / rows
    raise ValueError(f"unknown Fisher estimator {estimator!r} (known: {', '.join(ESTIMATORS)})")


def combine(estimator: str, per_batch: list[jax.Array]) -> jax.Array:
    """Aggregate per-batch values: mean (expectation over x) or, for `argmax_batch`, sum."""
    stacked = jnp.stack(per_batch)
    return stacked.sum(0) if estimator in BATCH_ESTIMATORS else stacked.mean(0)
