"""Per-group trace of the Fisher information, tr(F)_g = sum_{theta in g} E_x E_y~p(y|x) (d log p(y|x) / d theta)^2.

Estimators (pure functions of the parameters: no model copy, optimizer untouched, dropout off):
- `sampled` (the paper's Eq. 1, default): per-example gradients via `vmap`, y sampled from the
  model's predictive distribution;
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


def _log_likelihood(log_probs: jax.Array, weights: jax.Array | None, labels: jax.Array) -> jax.Array:
    """[batch] weighted sum over output positions of log p(label)."""
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    if weights is not None:
        picked = picked * weights
    return picked.reshape(picked.shape[0], -1).sum(-1)


def _per_example(log_probs: LogProbFn, params: dict, batch: dict, labels: jax.Array,
                 order: Sequence[str]) -> jax.Array:
    """Mean over examples of per-group squared per-example gradients of log p(label | x)."""
    def single(example, label):
        one = jax.tree.map(lambda x: x[None], example)
        grads = jax.grad(lambda p: _log_likelihood(*log_probs(p, one), label[None])[0])(params)
        return group_sq_norms(grads, order)

    return jax.vmap(single)(batch, labels).mean(0)


def _batch_nll(params: dict, log_probs: LogProbFn, inputs: dict, labels: jax.Array) -> jax.Array:
    """Mean NLL of the batch: over every output of every example when they weigh alike (QA's
    start and end rows, as the official code's `cat([start, end])`), else the weighted sum per
    example averaged over the batch (LM tokens under their loss mask)."""
    lp, weights = log_probs(params, inputs)
    if weights is None:
        return -jnp.take_along_axis(lp, labels[..., None], axis=-1).mean()
    return -_log_likelihood(lp, weights, labels).mean()


def batch_trace(estimator: str, log_probs: LogProbFn, params: dict, batch: dict,
                key: jax.Array, order: Sequence[str]) -> jax.Array:
    """Per-group tr(F) estimate from one batch ([num_groups], groups in `order`); see `combine`."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if estimator == "sampled":
        logits, _ = log_probs(params, inputs)
        labels = jax.random.categorical(key, logits, axis=-1)
        return _per_example(log_probs, params, inputs, labels, order)
    if estimator == "empirical":
        return _per_example(log_probs, params, inputs, batch["labels"], order)
    if estimator in BATCH_ESTIMATORS:
        logits = log_probs(params, inputs)[0]
        labels = (jnp.argmax(logits, axis=-1) if estimator == "argmax_batch"
                  else jax.random.categorical(key, logits, axis=-1))
        return group_sq_norms(jax.grad(_batch_nll)(params, log_probs, inputs, labels), order) \
            / labels.shape[0]
    raise ValueError(f"unknown Fisher estimator {estimator!r} (known: {', '.join(ESTIMATORS)})")


def combine(estimator: str, per_batch: list[jax.Array]) -> jax.Array:
    """Aggregate per-batch values: mean (expectation over x) or, for `argmax_batch`, sum."""
    stacked = jnp.stack(per_batch)
    return stacked.sum(0) if estimator in BATCH_ESTIMATORS else stacked.mean(0)
