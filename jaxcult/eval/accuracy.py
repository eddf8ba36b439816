"""Accuracy of one categorical prediction per example (classification, multiple choice)."""

from __future__ import annotations

import jax
import numpy as np

from jaxcult.data.batching import Split
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator


@register_evaluator("accuracy", default=True)
class Accuracy(Evaluator):
    """Fraction of examples whose argmax over the last output axis equals `labels`."""

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        return {"prediction": outputs.argmax(-1)}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        hits = results["prediction"] == split.arrays["labels"]
        return {"accuracy": float(hits.sum()) / max(len(hits), 1)}
