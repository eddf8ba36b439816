"""Scoring parameters on a split, and keeping the best-validation parameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcult.checkpoint import host_arrays
from jaxcult.data.batching import Split, eval_batches
from jaxcult.eval import Metrics
from jaxcult.sharding import host_inputs
from jaxcult.trainers.program import ModelProgram


def evaluate(program: ModelProgram, params, frozen, split: Split, batch_size: int) -> Metrics:
    """The evaluator's metrics on every example of `split` (padding rows of the last batch
    are dropped before the evaluator sees the per-example results)."""
    results: dict[str, list[np.ndarray]] = {}
    for batch, valid in eval_batches(split, batch_size):
        outputs = program.eval_step(params, frozen, host_inputs(batch))
        for key, value in outputs.items():
            results.setdefault(key, []).append(np.asarray(value)[valid])
    return program.evaluator.metrics({k: np.concatenate(v) for k, v in results.items()}, split)


class BestKeeper:
    """The best validation result so far and a host copy of its parameters."""

    def __init__(self, primary_metric: str, maximize: bool, params: Any) -> None:
        self.metric, self.maximize = primary_metric, maximize
        self.value: float | None = None
        self.step = 0
        self.metrics: Metrics = {}
        self.params = host_arrays(params)

    def offer(self, step: int, metrics: Metrics, params: Any) -> bool:
        """Keep `params` if `metrics` beat the best so far; returns whether they did."""
        value = metrics[self.metric]
        better = self.value is None or (value > self.value if self.maximize else value < self.value)
        if better:
            self.value, self.step, self.metrics = value, step, metrics
            self.params = host_arrays(params)
        return better

    def state_dict(self) -> dict:
        return {"value": self.value, "step": self.step, "metrics": self.metrics}

    def load_state_dict(self, state: dict, params: Any) -> None:
        self.value, self.step = state["value"], state["step"]
        self.metrics = state.get("metrics", {})
        self.params = host_arrays(params)
