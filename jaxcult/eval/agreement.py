"""Rank agreement between two raters (e.g. two judge models) over the same items.

Spearman's rho is Pearson's correlation of the ranks, ties given their average rank; Kendall's
tau-b counts concordant minus discordant pairs, normalised for ties in either rater (the
definitions scipy.stats implements). Quadratic in the items, which is fine for thousands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def _checked(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    if len(a) != len(b):
        raise ValueError(f"agreement needs paired ratings ({len(a)} vs {len(b)})")
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None    # undefined: fewer than two items, or a constant rater
    return x, y


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (None when undefined: < 2 items or a constant rater)."""
    pair = _checked(a, b)
    if pair is None:
        return None
    return float(np.corrcoef(average_ranks(pair[0]), average_ranks(pair[1]))[0, 1])


def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b (None when undefined)."""
    pair = _checked(a, b)
    if pair is None:
        return None
    sx = np.sign(pair[0][:, None] - pair[0][None, :])
    sy = np.sign(pair[1][:, None] - pair[1][None, :])
    return float((sx * sy).sum() / np.sqrt((sx * sx).sum() * (sy * sy).sum()))
