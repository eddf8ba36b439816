"""What every place that prints, plots or averages metrics shares."""

from __future__ import annotations

from numbers import Real
from typing import Any

PERCENT_METRICS = ("accuracy", "token_accuracy", "f1", "exact_match")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics dict (what tables show and averages cover); nested
    results (per type, per group) are left out."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, Real) and not isinstance(v, bool)}
