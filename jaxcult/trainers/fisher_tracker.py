"""tr(F) per group on fresh training batches, with its own iterator (training order untouched)."""

from __future__ import annotations

import jax
import numpy as np

from jaxcult.config import RunConfig
from jaxcult.data.batching import BatchIterator, Split
from jaxcult.fisher import combine
from jaxcult.sharding import host_inputs
from jaxcult.trainers.program import ModelProgram


class FisherTracker:
    """Per-group tr(F) from `fisher.num_batches` fresh batches, plus its normalised moving average."""

    def __init__(self, config: RunConfig, program: ModelProgram, groups: list[str],
                 frozen, train: Split) -> None:
        size = config.fisher.batch_size or config.trainer.batch_size
        self.batches = BatchIterator(train, size, seed=config.trainer.seed + 7919)
        self.estimator, self.n = config.fisher.estimator, config.fisher.num_batches
        self.fn = program.make_fisher(self.estimator)
        self.groups, self.frozen = groups, frozen
        self.key = jax.random.key(config.trainer.seed + 1)
        self.ema: np.ndarray | None = None
        self.decay = config.fisher.ema

    def __call__(self, params, step: int) -> dict[str, float]:
        values = []
        for i in range(self.n):
            batch = host_inputs(next(self.batches))
            key = jax.random.fold_in(jax.random.fold_in(self.key, step), i)
            values.append(self.fn(params, self.frozen, batch, key))
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
