"""VQA scoring: exact-match accuracy, per question type, and the yes/no collapse diagnostic.

One scorer (`score_answers`) serves both jaxcult's evaluator (argmax answers of a trained
model) and `jaxcult vqa score` (predictions of other systems, e.g. IGLUE's released xGQA
outputs): a prediction is correct iff it equals the gold English answer exactly; accuracy is
also broken down by the GQA structural and semantic types where known; `yes_no_share` is the
share of predictions that are "yes" or "no" (models that collapse onto them in a target
language show it here first).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import jax
import numpy as np

from jaxcult.data.batching import Split
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator

YES_NO = ("yes", "no")


def _by_type(hits: np.ndarray, types: Sequence[dict], field: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for hit, kinds in zip(hits, types):
        kind = (kinds or {}).get(field)
        if kind:
            groups[kind].append(bool(hit))
    return {kind: {"accuracy": float(np.mean(v)), "count": len(v)} for kind, v in sorted(groups.items())}


def score_answers(predictions: Sequence[str], gold: Sequence[str],
                  types: Sequence[dict] | None = None) -> Metrics:
    """Accuracy, yes/no share and (with `types`) accuracy per structural / semantic type."""
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} questions")
    hits = np.asarray([p == g for p, g in zip(predictions, gold)], bool)
    metrics: Metrics = {
        "accuracy": float(hits.mean()) if len(hits) else 0.0,
        "yes_no_share": float(np.mean([p in YES_NO for p in predictions])) if len(hits) else 0.0,
        "gold_yes_no_share": float(np.mean([g in YES_NO for g in gold])) if len(hits) else 0.0,
        # the best constant answer's accuracy: what a model must beat to use the question at all
        "majority_accuracy": max(Counter(gold).values()) / len(gold) if len(hits) else 0.0}
    if types is not None:
        for field in ("structural", "semantic"):
            table = _by_type(hits, types, field)
            if table:
                metrics[f"by_{field}"] = table
    return metrics


@register_evaluator("vqa")
class VqaAccuracy(Evaluator):
    """Exact-match accuracy of the argmax answer, per type, yes/no share, the accuracy of the
    modality-bias probes the task computed (`blind_accuracy`, `shuffled_accuracy`) and of the
    question-type predictor (`type_accuracy`, where types are known). Each question's predicted
    answer goes to the run's `predictions/` in IGLUE's format, which `jaxcult vqa score` reads."""

    def device_outputs(self, outputs, batch: dict) -> dict[str, jax.Array]:
        if not isinstance(outputs, dict):
            outputs = {"logits": outputs}
        return {("prediction" if name == "logits" else f"{name}_prediction"): value.argmax(-1)
                for name, value in outputs.items()}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        answers = self.info.labels
        gold = [answers[i] for i in split.arrays["labels"]]
        types = (split.meta or {}).get("types")
        metrics = score_answers([answers[i] for i in results["prediction"]], gold, types)
        known = split.arrays["type_ids"] >= 0 if "types_prediction" in results else None
        if known is not None and known.any():
            hits = results["types_prediction"] == split.arrays["type_ids"]
            metrics["type_accuracy"] = float(hits[known].mean())
        for name in ("blind", "shuffled"):
            if f"{name}_prediction" in results:
                probe = score_answers([answers[i] for i in results[f"{name}_prediction"]], gold)
                metrics[f"{name}_accuracy"] = probe["accuracy"]
                metrics[f"{name}_yes_no_share"] = probe["yes_no_share"]
        return metrics

    def example_predictions(self, results: dict[str, np.ndarray], split: Split) -> list[dict]:
        answers = self.info.labels
        return [{"questionId": qid, "prediction": answers[i]}
                for qid, i in zip(split.meta["question_ids"], results["prediction"])]
