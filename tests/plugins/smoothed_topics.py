"""A pooled classification family with a typed option of its own, and an evaluator with
options, written as a user would outside the jaxcult package (named by import path:
`smoothed_topics:SmoothedClassification`, `smoothed_topics:ClassRecall`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from pydantic import Field

from jaxcult.config import EvaluatorConfig
from jaxcult.eval import Evaluator
from jaxcult.tasks.choice import Classification, PooledHeadSettings


class SmoothedSettings(PooledHeadSettings):
    """The built-in pooled head's settings (`pooling`, `head`) plus label smoothing."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="mass spread over all labels")


class SmoothedClassification(Classification):
    """Classification trained on label-smoothed targets (`task.label_smoothing`)."""

    Settings = SmoothedSettings

    def loss(self, outputs, batch):
        logits = outputs.astype(jnp.float32)
        targets = optax.smooth_labels(jnp.eye(logits.shape[-1])[batch["labels"]],
                                      self.settings.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, (logits.argmax(-1) == batch["labels"]).mean()


class RecallSettings(EvaluatorConfig):
    label: str = Field(..., description="the class whose recall is reported")


class ClassRecall(Evaluator):
    """Recall of one class (`label`, a label of the dataset)."""

    Settings = RecallSettings
    primary_metric = "recall"

    def device_outputs(self, outputs, batch):
        return {"prediction": outputs.argmax(-1)}

    def metrics(self, results, split):
        wanted = self.info.labels.index(self.settings.label)
        gold = split.arrays["labels"] == wanted
        hits = (results["prediction"] == wanted) & gold
        return {"recall": float(hits.sum() / max(gold.sum(), 1)),
                "support": int(np.sum(gold))}
