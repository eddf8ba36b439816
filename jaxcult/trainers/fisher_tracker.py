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
from jaxcult.errors import UserError
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

    def draws(self, step: int) -> list[tuple[dict, jax.Array]]:
        """The inputs of the estimate at `step`: its batches (host arrays; the iterator moves
        on) and their keys."""
        if self.one_pass:  # a fresh shuffled pass per estimate (epoch number = the step)
            self.batches.restore({"epoch": step, "position": 0})
        return [(next(self.batches), jax.random.fold_in(jax.random.fold_in(self.key, step), i))
                for i in range(self.n)]

    def reduce(self, values: list[jax.Array], draws: list[tuple[dict, jax.Array]]
               ) -> dict[str, float]:
        """Per-group tr(F) from the per-batch values of `draws`."""
        scaled = []
        for value, (batch, _) in zip(values, draws):
            rows = next(iter(batch.values())).shape[0]
            if self.estimator in BATCH_ESTIMATORS and rows < self.size:
                value = value * (rows / self.size)  # the official code divides by the full size
            scaled.append(value)
        return dict(zip(self.groups, map(float, np.asarray(combine(self.estimator, scaled)))))

    def __call__(self, params, step: int) -> dict[str, float]:
        draws = self.draws(step)
        return self.reduce([self.fn(params, self.frozen, host_inputs(batch), key)
                            for batch, key in draws], draws)

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


class InStepEstimate:
    """`fisher.estimator: in_step_ema`: tr(F) per group from the training steps themselves.

    The `window` steps before each schedule check run the full backward (`TrainState.track`)
    and report their per-group squared batch gradient / B (gold labels); the estimate at a check
    is the moving average of those (decay `fisher.ema`, the most recent weighing most). No
    extra forward or backward at all, but it is not the paper's estimator: it measures the
    gradient of the training loss at the gold labels, which favours the layers just below the
    trainable ones (see docs/performance.md for how often it agrees with the 41-batch one).
    """

    estimator = "in_step_ema"

    def __init__(self, config: RunConfig, groups: list[str], is_check) -> None:
        self.groups, self.window, self.decay = groups, config.fisher.window, config.fisher.ema
        self.is_check = is_check
        self.seen: list[tuple[int, jax.Array]] = []   # (step, [num_groups] trace on device)
        self.ema: np.ndarray | None = None

    def tracks(self, step: int) -> bool:
        """Whether step `step` is one of the `window` steps before a check."""
        return any(self.is_check(c) for c in range(step + 1, step + self.window + 1))

    def observe(self, step: int, trace: jax.Array) -> None:
        self.seen = [*self.seen, (step, trace)][-self.window:]

    def __call__(self, params, step: int) -> dict[str, float]:
        del params  # read from the steps already taken
        recent = [trace for seen, trace in self.seen if step - self.window <= seen < step]
        if not recent:
            raise UserError(f"fisher.estimator=in_step_ema: no training step before the check "
                            f"at step {step} to estimate tr(F) from")
        traces = np.asarray(jax.device_get(recent), dtype=np.float64)
        weights = self.decay ** np.arange(len(traces))[::-1]
        value = (weights[:, None] * traces).sum(0) / weights.sum()
        return dict(zip(self.groups, map(float, value)))

    normalised = FisherTracker.normalised

    def state(self) -> dict:
        return {"seen": [[step, [float(x) for x in np.asarray(trace)]] for step, trace in self.seen],
                "ema": None if self.ema is None else [float(x) for x in self.ema]}

    def restore(self, state: dict) -> None:
        self.seen = [(int(step), np.asarray(trace, np.float32)) for step, trace in state["seen"]]
        self.ema = None if state["ema"] is None else np.asarray(state["ema"], dtype=np.float64)
