"""Scoring parameters on a split, and keeping the best-validation parameters."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from jaxcult.checkpoint import host_arrays
from jaxcult.data.batching import Split, eval_batches
from jaxcult.eval import Metrics
from jaxcult.rundir import write_text_atomic
from jaxcult.sharding import host_inputs
from jaxcult.trainers.program import ModelProgram

log = logging.getLogger(__name__)

T = TypeVar("T")


def _merged_outputs(program: ModelProgram, split: Split, batch_size: int,
                    run: Callable[[dict], list[dict]]) -> list[dict[str, np.ndarray]]:
    """Every example's evaluation outputs in split order, one dict per parameter set
    `run(batch)` scores (padding rows of the last batch dropped; length-bucketed sequence
    outputs padded back to the split's length)."""
    results: list[dict[str, list[np.ndarray]]] = []
    along_sequence = program.evaluator.sequence_outputs
    order = []
    for batch, valid, examples in eval_batches(split, batch_size):
        order.append(examples)
        per_set = run(host_inputs(batch))
        results = results or [{} for _ in per_set]
        for outputs, collected in zip(per_set, results):
            for key, value in outputs.items():
                value = np.asarray(value)[valid]
                if key in along_sequence:  # a length-bucketed batch: back to the split's length
                    missing = split.padded_length - value.shape[-1]
                    fill = -np.inf if np.issubdtype(value.dtype, np.floating) else 0
                    value = np.pad(value, [(0, 0)] * (value.ndim - 1) + [(0, missing)],
                                   constant_values=fill)
                collected.setdefault(key, []).append(value)
    back = np.argsort(np.concatenate(order)) if order else []  # back into split order
    return [{k: np.concatenate(v)[back] for k, v in collected.items()} for collected in results]


def _metrics(program: ModelProgram, merged: dict[str, np.ndarray], split: Split,
             predictions_to: Path | None) -> Metrics:
    """The evaluator's metrics; with `predictions_to`, its per-example predictions (if it keeps
    any) are written there as JSON."""
    rows = program.evaluator.example_predictions(merged, split) if predictions_to is not None else None
    if rows is not None:
        predictions_to.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(predictions_to, json.dumps(rows, ensure_ascii=False))
    return program.evaluator.metrics(merged, split)


def evaluate(program: ModelProgram, params, frozen, split: Split, batch_size: int,
             predictions_to: Path | None = None) -> Metrics:
    """The evaluator's metrics on every example of `split`; with `predictions_to`, the
    evaluator's per-example predictions (if it keeps any) are written there as JSON."""
    merged = _merged_outputs(program, split, batch_size,
                             lambda batch: [program.eval_step(params, frozen, batch)])
    return _metrics(program, merged[0], split, predictions_to)


def evaluate_seeds(program: ModelProgram, params, frozen, split: Split, batch_size: int,
                   predictions_to: Sequence[Path | None] | None = None, *,
                   shared_frozen: bool = True) -> list[Metrics]:
    """`evaluate` for several parameter sets (vectorised seeds) in one vmapped program: each
    batch is read once and scored by every set. `params` holds the sets stacked on a leading
    axis; `frozen` is the backbone they share, or with `shared_frozen` false their backbones
    stacked the same way (callers stack once, not at every evaluation)."""
    count = len(jax.tree.leaves(params)[0])
    step = program.seeds_eval_step(shared_frozen)

    def run(batch: dict) -> list[dict]:
        outputs = step(params, frozen, batch)
        return [{k: v[i] for k, v in outputs.items()} for i in range(count)]

    merged = _merged_outputs(program, split, batch_size, run)
    targets = predictions_to if predictions_to is not None else [None] * count
    return [_metrics(program, m, split, t) for m, t in zip(merged, targets)]


def each_language(splits: dict[str, Split], score: Callable[[str, Split], T]) -> dict[str, T]:
    """`score(language, split)` for every language, reporting progress on stderr: evaluation
    of many languages takes a while."""
    scores = {}
    for number, (language, split) in enumerate(splits.items(), 1):
        start = time.perf_counter()
        scores[language] = score(language, split)
        log.info(f"evaluated {language} ({number}/{len(splits)}, {len(split)} examples, "
              f"{time.perf_counter() - start:.1f} s)")
    return scores


def evaluate_languages(program: ModelProgram, params, frozen: dict[str, Any],
                       splits: dict[str, Split], batch_size: int,
                       predictions_dir: Path | None = None) -> dict[str, Metrics]:
    """Metrics per language (each with its own frozen state, e.g. a MAD-X language adapter).
    With `predictions_dir`, each language's predictions go to `<language>.json` there."""
    def score(language: str, split: Split) -> Metrics:
        target = predictions_dir / f"{language}.json" if predictions_dir is not None else None
        return evaluate(program, params, frozen[language], split, batch_size, target)
    return each_language(splits, score)


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
