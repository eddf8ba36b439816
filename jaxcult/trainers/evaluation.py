"""Scoring a trained state per language, the run summary, and its console table."""

from __future__ import annotations

import numpy as np

from jaxcult.config import RunConfig
from jaxcult.data.batching import Split, eval_batches
from jaxcult.metrics import PERCENT_METRICS
from jaxcult.sharding import host_inputs
from jaxcult.trainers.steps import TrainProgram


def evaluate(program: TrainProgram, params, frozen, split: Split, batch_size: int) -> dict[str, float]:
    """The task's metrics on every example of `split` (padding rows of the last batch ignored).

    Tasks scored on the host from all outputs at once (extractive QA's span decoding) implement
    `score(outputs, split.meta, language)`; the others sum `eval_sums` over batches.
    """
    if hasattr(program.task, "score"):
        outputs = []
        for batch, valid in eval_batches(split, batch_size):
            logits = program.eval_outputs(params, frozen, host_inputs(batch))
            outputs.append(np.asarray(logits)[valid])
        return program.task.score(np.concatenate(outputs), split.meta,
                                  split.meta.get("score_language"))
    totals: dict[str, float] = {}
    for batch, valid in eval_batches(split, batch_size):
        inputs = host_inputs({**batch, "valid": valid})
        valid_rows = inputs.pop("valid")
        sums = program.eval_sums(params, frozen, inputs, valid_rows)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return program.task.finalize(totals)


def is_better(value: float, best: float | None, maximize: bool) -> bool:
    return best is None or (value > best if maximize else value < best)


def make_summary(config: RunConfig, scores: dict[str, dict[str, float]], trainable: list[str], *,
                 best_step: int, best_validation: dict[str, float], primary_metric: str) -> dict:
    """summary.json: per-language scores and their average over targets (source excluded)."""
    source = config.data.source_language
    targets = [lang for lang in scores if lang != source]
    metrics = sorted({m for s in scores.values() for m in s})
    average = ({m: float(np.mean([scores[lang][m] for lang in targets])) for m in metrics}
               if targets else {})
    summary = {"task": config.task.name, "dataset": config.data.name, "source_language": source,
               "primary_metric": primary_metric, "metrics": scores,
               "average_excluding_source": average, "trainable_groups_final": trainable,
               "best_step": best_step, "best_validation": best_validation,
               "seed": config.trainer.seed}
    if config.peft.language_adapters:  # MAD-X: which adapter each language ran with (None: dropped)
        summary["language_adapters"] = {lang: config.peft.language_adapters.get(lang)
                                        for lang in scores}
    return summary


def format_cell(metric: str, value: float) -> str:
    return f"{100 * value:>8.2f}%" if metric in PERCENT_METRICS else f"{value:>9.4g}"


def format_scores(summary: dict) -> str:
    """One row per language, one column per metric, then the average without the source."""
    names = sorted({m for values in summary["metrics"].values() for m in values})
    width = max(9, *(len(n) for n in names))
    lines = [f"{'language':<20} " + " ".join(f"{n:>{width}}" for n in names)]

    def row(label: str, values: dict[str, float]) -> str:
        return f"{label:<20} " + " ".join(f"{format_cell(n, values[n]):>{width}}" if n in values
                                          else " " * width for n in names)

    for lang, values in summary["metrics"].items():
        marker = " (source)" if lang == summary["source_language"] else ""
        lines.append(row(lang, values) + marker)
    if summary["average_excluding_source"]:
        lines.append(row("average (no source)", summary["average_excluding_source"]))
    return "\n".join(lines)
