"""Extractive QA: start/end classification over window tokens, n-best span decoding, SQuAD F1/EM.

Training minimises the mean of the start and end cross-entropies (labels [batch, 2]). The Fisher
output distribution is the pair of categoricals (start, end), their log-probabilities summed.
Evaluation gathers every window's logits, then for each question takes the `n_best` highest
start and end logits among context tokens, keeps spans with start <= end and at most
`max_answer_length` tokens, and answers with the best-scoring span (start + end logit) over all
of its windows; predictions are scored with SQuAD v1.1 F1/EM (MLQA's rules for `lang`).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxcult.eval.squad import squad_scores
from jaxcult.tasks.base import categorical, categorical_log_probs, encoder_forward


class SpanQATask:
    name = "extractive_qa"
    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    primary_metric = "f1"
    maximize = True

    def __init__(self, n_best: int = 20, max_answer_length: int = 30) -> None:
        self.n_best, self.max_answer_length = n_best, max_answer_length

    forward = staticmethod(encoder_forward)
    log_probs = staticmethod(categorical_log_probs)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits, loss = categorical(outputs, batch)
        return loss, (logits.argmax(-1) == batch["labels"]).all(-1).mean()


    def best_span(self, start: np.ndarray, end: np.ndarray, offsets: np.ndarray
                  ) -> tuple[float, int, int] | None:
        """(score, first char, end char) of the best valid span in one window, or None."""
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

    def score(self, logits: np.ndarray, meta: dict, language: str | None) -> dict[str, float]:
        references = {r["id"]: r["answers"] for r in meta["records"]}
        scores = squad_scores(self.predictions(logits, meta), references, lang=language)
        return {"f1": scores["f1"] / 100.0, "exact_match": scores["exact_match"] / 100.0}
