"""tr(F) per group on fresh training batches, with its own iterator (training order untouched).

By default each estimate reads the next `fisher.num_batches` batches of an endless shuffled
stream. With `fisher.one_pass` (the official code) each estimate is a fresh shuffled pass over
the training data from its start, at most `num_batches` batches, the partial last batch
included; the batch-gradient estimators then scale that batch as the official code does
(divided by the full batch size, not by its own).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxcult.config import RunConfig
from jaxcult.data.batching import BatchIterator, Split
from jaxcult.fisher import BATCH_ESTIMATORS, combine
from jaxcult.sharding import host_inputs
from jaxcult.trainers.program import ModelProgram


class FisherTracker:
    """Per-group tr(F) from `fisher.num_batches` fresh batches, plus its normalised moving average."""

    def __init__(self, config: RunConfig, program: ModelProgram, groups: list[str],
                 frozen, train: Split) -> None:
        self.size = config.fisher.batch_size or config.trainer.batch_size
        self.one_pass = config.fisher.one_pass
        self.batches = BatchIterator(train, self.size, seed=config.trainer.seed + 7919,
                                     keep_remainder=self.one_pass)
        self.estimator, self.n = config.fisher.estimator, config.fisher.num_batches
        if self.one_pass:
            self.n = min(self.n, self.batches.batches_per_epoch)
        self.fn = program.make_fisher(self.estimator)
        self.groups, self.frozen = groups, frozen
        self.key = jax.random.key(config.trainer.seed + 1)
        self.ema: np.ndarray | None = None
        self.decay = config.fisher.ema

    def __call__(self, params, step: int) -> dict[str, float]:
        if self.one_pass:  # a fresh shuffled pass per estimate (epoch number = the step)
            self.batches.restore({"epoch": step, "position": 0})
        values = []
        for i in range(self.n):
            batch = host_inputs(next(self.batches))
            key = jax.random.fold_in(jax.random.fold_in(self.key, step), i)
            value = self.fn(params, self.frozen, batch, key)
            rows = next(iter(batch.values())).shape[0]
            if self.estimator in BATCH_ESTIMATORS and rows < self.size:
                value = value * (rows / self.size)  # the official code divides by the full size
            values.append(value)
        return dict(zip(self.groups, map(float, np.asarray(combine(self.estimator, values)))))

    def normalised(self, traces: dict[str, float], mask: np.ndarray) -> dict[str, float]:
        """tr(F) divided by the number of trainable groups, smoothed by a moving average."""
        raw = np.array([traces[g] for g in self.groups]) / max(int(mask.sum()), 1)
        self.ema = raw if self.ema is None else self.decay * self.ema + (1 - self.decay) * raw
        return dict(zip(self.groups, map(float, self.ema)))

    def state(self) -> dict:
        return {"batches": self.batches.state(),
                "ema": None if self.ema is None else [float(x) for x in self.ema]}

    def restore(self, state: dict) -> None:
        self.batches.restore(state["batches"])
        self.ema = None if state["ema"] is None else np.asarray(state["ema"], dtype=np.float64)
