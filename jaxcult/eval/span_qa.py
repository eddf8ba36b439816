"""Extractive QA evaluation: n-best span decoding over doc-stride windows, SQuAD/MLQA scoring.

For each question, every window's `n_best` highest start and end logits among context tokens
are paired; spans with start <= end and at most `max_answer_length` tokens are kept; the answer
is the best-scoring span (start + end logit) over all of its windows. Predictions are scored by
`squad_scores` under its `scoring` setting: `dataset` (SQuAD v1.1 for XQuAD, MLQA's per-language rules
for MLQA), `squad`, `mlqa`, or `fun_official` (SQuAD v1.1, Chinese scored per character, as the
FUN code); the split's language selects the per-language rules.
"""

from __future__ import annotations

from typing import Literal

import jax
import numpy as np
from pydantic import Field

from jaxcult.config import EvaluatorConfig
from jaxcult.data.batching import Split
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator
from jaxcult.eval.squad import squad_scores


class SpanQASettings(EvaluatorConfig):
    n_best: int = Field(20, gt=0, description="highest start and end logits paired per window")
    max_answer_length: int = Field(30, gt=0, description="tokens of the longest answer span")
    scoring: Literal["dataset", "squad", "mlqa", "fun_official"] = Field(
        "dataset", description="answer normalisation: the dataset's (XQuAD: squad, MLQA: mlqa), "
        "or fun_official: SQuAD v1.1 with Chinese scored per character (the FUN code)")


@register_evaluator("squad")
class SpanQAScores(Evaluator):
    Settings = SpanQASettings
    primary_metric = "f1"

    @property
    def n_best(self) -> int:
        return self.settings.n_best

    @property
    def max_answer_length(self) -> int:
        return self.settings.max_answer_length

    sequence_outputs = ("logits",)

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        return {"logits": outputs}

    def best_span(self, start: np.ndarray, end: np.ndarray, offsets: np.ndarray
                  ) -> tuple[float, int, int] | None:
        """(score, first char, end char) of the best valid span in one window, or None."""
        start, end = start[:len(offsets)], end[:len(offsets)]  # beyond: padding of the batch
        context = offsets[:, 0] >= 0
        if not context.any():
            return None
        start = np.where(context, start, -np.inf)
        end = np.where(context, end, -np.inf)
        starts = np.argsort(-start)[:self.n_best]
        ends = np.argsort(-end)[:self.n_best]
        scores = start[starts][:, None] + end[ends][None, :]
        length = ends[None, :] - starts[:, None] + 1
        scores = np.where((length >= 1) & (length <= self.max_answer_length), scores, -np.inf)
        s, e = np.unravel_index(np.argmax(scores), scores.shape)
        if not np.isfinite(scores[s, e]):
            return None
        return float(scores[s, e]), int(offsets[starts[s], 0]), int(offsets[ends[e], 1])

    def predictions(self, logits: np.ndarray, meta: dict) -> dict[str, str]:
        """Question id -> answer text, best span over all windows of each question."""
        best: dict[int, tuple[float, int, int]] = {}
        for w, (start, end) in enumerate(logits):
            found = self.best_span(start, end, meta["offsets"][w])
            index = int(meta["example"][w])
            if found is not None and (index not in best or found[0] > best[index][0]):
                best[index] = found
        out = {}
        for index, record in enumerate(meta["records"]):
            span = best.get(index)
            out[record["id"]] = record["context"][span[1]:span[2]] if span else ""
        return out

    def example_predictions(self, results: dict[str, np.ndarray], split: Split) -> dict[str, str]:
        """SQuAD's prediction-file format: question id -> answer text."""
        return self.predictions(results["logits"], split.meta)

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        meta = split.meta
        references = {r["id"]: r["answers"] for r in meta["records"]}
        rules = self.settings.scoring
        if rules == "dataset":
            rules = self.info.metadata.get("qa_scoring", "squad")
        scores = squad_scores(self.predictions(results["logits"], meta), references,
                              lang=split.language, rules=rules)
        return {"f1": scores["f1"] / 100.0, "exact_match": scores["exact_match"] / 100.0}
