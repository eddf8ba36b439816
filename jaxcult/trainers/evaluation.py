"""Scoring a trained state per language, the run summary, and its console table."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxcult.config import RunConfig
from jaxcult.data.batching import Split, eval_batches
from jaxcult.trainers.steps import ClassificationProgram


def accuracy(program: ClassificationProgram, params, frozen, split: Split, batch_size: int) -> float:
    correct, count = 0, 0
    for batch, valid in eval_batches(split, batch_size):
        logits = program.eval_logits(params, frozen, {k: jnp.asarray(v) for k, v in batch.items()})
        hits = np.asarray(logits).argmax(-1) == batch["labels"]
        correct += int(hits[valid].sum())
        count += int(valid.sum())
    return correct / count


def make_summary(config: RunConfig, scores: dict[str, dict[str, float]], trainable: list[str], *,
                 best_step: int, best_dev: float) -> dict:
    """summary.json: per-language scores and their average over targets (source excluded)."""
    source = config.data.source_language
    targets = [lang for lang in scores if lang != source]
    metrics = sorted({m for s in scores.values() for m in s})
    average = ({m: float(np.mean([scores[lang][m] for lang in targets])) for m in metrics}
               if targets else {})
    return {"task": config.task.name, "dataset": config.data.name, "source_language": source,
            "metrics": scores, "average_excluding_source": average,
            "trainable_groups_final": trainable, "best_step": best_step,
            "best_validation": {"accuracy": best_dev}, "seed": config.trainer.seed}


def format_scores(summary: dict) -> str:
    lines = [f"{'language':<20} {'accuracy':>9}"]
    for lang, values in summary["metrics"].items():
        marker = " (source)" if lang == summary["source_language"] else ""
        lines.append(f"{lang:<20} {100 * values['accuracy']:>8.2f}%{marker}")
    avg = summary["average_excluding_source"].get("accuracy")
    if avg is not None:
        lines.append(f"{'average (no source)':<20} {100 * avg:>8.2f}%")
    return "\n".join(lines)
