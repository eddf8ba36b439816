"""F1 per class of one categorical prediction per example, and their mean (macro-F1).

Classification's usual companion to accuracy when classes are unbalanced (offensive-language
detection, NLI in low-resource languages). F1 of a class is 2·TP / (2·TP + FP + FN); a class
that is never gold nor predicted has F1 0 and still counts in the mean, so the mean is over the
same classes on every split (scikit-learn's `f1_score(average="macro", labels=...,
zero_division=0)`).
"""

from __future__ import annotations

import jax
import numpy as np
from pydantic import Field

from jaxcult.config import EvaluatorConfig
from jaxcult.data.batching import Split
from jaxcult.errors import UserError
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator


class MacroF1Settings(EvaluatorConfig):
    classes: list[str] = Field(default_factory=list, description="the classes averaged (labels "
                               "of the dataset); default: every label")


def f1_by_class(gold: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """F1 of each class 0..classes-1 (0 where it has no true or predicted example)."""
    f1 = np.zeros(classes)
    for c in range(classes):
        tp = np.sum((predicted == c) & (gold == c))
        wrong = np.sum((predicted == c) != (gold == c))
        f1[c] = 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0
    return f1


@register_evaluator("macro_f1")
class MacroF1(Evaluator):
    """`macro_f1` over the chosen classes, and `f1_by_class` (kept, not averaged)."""

    Settings = MacroF1Settings
    primary_metric = "macro_f1"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        labels = self.info.labels
        unknown = [c for c in self.settings.classes if c not in labels]
        if unknown:
            raise UserError(f"task.evaluators: macro_f1 class {unknown[0]!r} is not a label of the "
                            f"dataset ({', '.join(labels) or 'it has no labels'})")
        self.averaged = [labels.index(c) for c in self.settings.classes] or list(range(len(labels)))

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        return {"prediction": outputs.argmax(-1)}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        labels = self.info.labels
        f1 = f1_by_class(split.arrays["labels"], results["prediction"], len(labels))
        return {"macro_f1": float(f1[self.averaged].mean()) if self.averaged else 0.0,
                "f1_by_class": {labels[c]: float(f1[c]) for c in range(len(labels))}}
