"""Scoring parameters on a split, and keeping the best-validation parameters."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxcult.checkpoint import host_arrays
from jaxcult.data.batching import Split, eval_batches
from jaxcult.eval import Metrics
from jaxcult.sharding import host_inputs
from jaxcult.trainers.program import ModelProgram


def evaluate(program: ModelProgram, params, frozen, split: Split, batch_size: int,
             predictions_to: Path | None = None) -> Metrics:
    """The evaluator's metrics on every example of `split` (padding rows of the last batch
    are dropped before the evaluator sees the per-example results); with `predictions_to`,
    the evaluator's per-example predictions (if it keeps any) are written there as JSON."""
    results: dict[str, list[np.ndarray]] = {}
    along_sequence = program.evaluator.sequence_outputs
    for batch, valid in eval_batches(split, batch_size):
        outputs = program.eval_step(params, frozen, host_inputs(batch))
        for key, value in outputs.items():
            value = np.asarray(value)[valid]
            if key in along_sequence:  # a length-bucketed batch: back to the split's length
                missing = split.padded_length - value.shape[-1]
                fill = -np.inf if np.issubdtype(value.dtype, np.floating) else 0
                value = np.pad(value, [(0, 0)] * (value.ndim - 1) + [(0, missing)],
                               constant_values=fill)
            results.setdefault(key, []).append(value)
    merged = {k: np.concatenate(v) for k, v in results.items()}
    rows = program.evaluator.example_predictions(merged, split) if predictions_to is not None else None
    if rows is not None:
        predictions_to.parent.mkdir(parents=True, exist_ok=True)
        predictions_to.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return program.evaluator.metrics(merged, split)


def evaluate_languages(program: ModelProgram, params, frozen: dict[str, Any],
                       splits: dict[str, Split], batch_size: int,
                       predictions_dir: Path | None = None) -> dict[str, Metrics]:
    """Metrics per language (each with its own frozen state, e.g. a MAD-X language adapter),
    reporting progress on stderr: evaluation of many languages takes a while. With
    `predictions_dir`, each language's predictions go to `<language>.json` there."""
    scores = {}
    for number, (language, split) in enumerate(splits.items(), 1):
        start = time.perf_counter()
        target = predictions_dir / f"{language}.json" if predictions_dir is not None else None
        scores[language] = evaluate(program, params, frozen[language], split, batch_size, target)
        print(f"evaluated {language} ({number}/{len(splits)}, {len(split)} examples, "
              f"{time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return scores


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
