"""The evaluator protocol and registry: how a split's model outputs become metrics.

Evaluation runs in two halves. On device, inside the jitted evaluation step, an evaluator
reduces the model's raw outputs to small per-example arrays (`device_outputs`: a prediction, a
summed loss, ... — never a vocabulary-sized tensor). On the host it turns those arrays, one row
per example of the split in order, plus the split's own data (labels, records, language) into
metrics (`metrics`). Metrics are a dict of numbers; an evaluator may add nested dicts (per
question type, per group) that summaries keep but do not average.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcult.config import TaskConfig
from jaxcult.data.batching import Split
from jaxcult.data.registry import DatasetInfo
from jaxcult.metrics import scalar_metrics
from jaxcult.registry import Registry, subclasses_of

Metrics = dict[str, Any]


class Evaluator:
    """Base class of evaluators; `primary_metric` selects the best validation checkpoint."""

    name = "evaluator"
    primary_metric = "accuracy"
    maximize = True
    sequence_outputs: tuple[str, ...] = ()  # device outputs whose last axis is the sequence

    def __init__(self, config: TaskConfig, info: DatasetInfo) -> None:
        self.config, self.info = config, info

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        """Per-example arrays [batch, ...] computed on device (jitted)."""
        raise NotImplementedError

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        """Metrics of the whole split from the per-example results (rows in split order)."""
        raise NotImplementedError

    def example_predictions(self, results: dict[str, np.ndarray], split: Split) -> Any:
        """Per-example predictions worth keeping, as JSON (written to the run's
        `predictions/<language>.json` after the final evaluation), or None (the default:
        nothing written)."""
        return None


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator", check=subclasses_of(Evaluator))


def register_evaluator(name: str):
    """Class decorator: register an `Evaluator` subclass under `name` (sets its `name`)."""
    return EVALUATORS.named_class(name)


def resolve_evaluator(name: str, config: TaskConfig, info: DatasetInfo) -> Evaluator:
    """The evaluator called `name` (registered, or `pkg.mod:Class` named in `task.evaluator`)."""
    evaluator = EVALUATORS.get(name, "task.evaluator")(config, info)
    if ":" in name:
        evaluator.name = name
    return evaluator


__all__ = ["EVALUATORS", "Evaluator", "Metrics", "register_evaluator", "resolve_evaluator",
           "scalar_metrics"]
