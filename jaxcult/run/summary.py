"""summary.json of a run and its console table.

Metrics per language are whatever the evaluator returns: numbers, plus nested dicts (per type,
per group) that are kept as they are. Averages over the target languages and the tables cover
the numbers only.
"""

from __future__ import annotations

import numpy as np

from jaxcult.config import RunConfig
from jaxcult.eval import scalar_metrics
from jaxcult.metrics import PERCENT_METRICS
from jaxcult.run.build import Plugins


def average_over_targets(scores: dict[str, dict], source: str) -> dict[str, float]:
    """Mean of every numeric metric over the languages other than the source."""
    targets = [scalar_metrics(values) for lang, values in scores.items() if lang != source]
    names = sorted({m for values in targets for m in values})
    return {m: float(np.mean([t[m] for t in targets if m in t])) for m in names} if targets else {}


def make_summary(config: RunConfig, plugins: Plugins, scores: dict[str, dict],
                 trainable: list[str], *, best_step: int, best_validation: dict) -> dict:
    """summary.json: per-language scores and their average over targets (source excluded)."""
    source = config.data.source_language
    summary = {"task": plugins.task.name, "dataset": plugins.dataset_name,
               "evaluator": plugins.evaluator.name, "source_language": source,
               "primary_metric": plugins.evaluator.primary_metric, "metrics": scores,
               "average_excluding_source": average_over_targets(scores, source),
               "trainable_groups_final": trainable,
               "best_step": best_step, "best_validation": best_validation,
               "seed": config.trainer.seed}
    if config.peft.language_adapters:  # MAD-X: which adapter each language ran with (None: dropped)
        summary["language_adapters"] = {lang: config.peft.language_adapters.get(lang)
                                        for lang in scores}
    return summary


def format_cell(metric: str, value: float) -> str:
    return f"{100 * value:>8.2f}%" if metric in PERCENT_METRICS else f"{value:>9.4g}"


def format_scores(summary: dict) -> str:
    """One row per language, one column per numeric metric, then the average without the source."""
    rows = {lang: scalar_metrics(values) for lang, values in summary["metrics"].items()}
    names = sorted({m for values in rows.values() for m in values})
    width = max(9, *(len(n) for n in names))
    lines = [f"{'language':<20} " + " ".join(f"{n:>{width}}" for n in names)]

    def row(label: str, values: dict[str, float]) -> str:
        return f"{label:<20} " + " ".join(f"{format_cell(n, values[n]):>{width}}" if n in values
                                          else " " * width for n in names)

    for lang, values in rows.items():
        marker = " (source)" if lang == summary["source_language"] else ""
        lines.append(row(lang, values) + marker)
    if summary["average_excluding_source"]:
        lines.append(row("average (no source)", summary["average_excluding_source"]))
    return "\n".join(lines)
