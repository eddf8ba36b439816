"""Survey alignment metrics (CLCA §5, App. C): a model answering survey questions as simulated
respondents, scored against the real answer distribution of a culture.

Distributions are over a question's options `low..high` plus one final *safeguard* bin for
answers that parse to no option (counted wrong, and kept in the distribution so that a model
which never answers properly cannot look aligned).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_SMOOTHING = 1e-6


def histogram(answers: Sequence[int | None], low: int, high: int) -> np.ndarray:
    """Counts over the options low..high and the safeguard bin (None or out of range) last."""
    counts = np.zeros(high - low + 2)
    for answer in answers:
        inside = answer is not None and low <= answer <= high
        counts[answer - low if inside else -1] += 1
    return counts


def normalised(counts: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """A probability vector: `smoothing` added to every bin, then divided by the total."""
    p = np.asarray(counts, np.float64) + smoothing
    total = p.sum()
    if total <= 0:
        raise ValueError("an empty distribution (no answers and no smoothing)")
    return p / total


def kl_divergence(model: np.ndarray, survey: np.ndarray,
                  smoothing: float = DEFAULT_SMOOTHING) -> float:
    """KL(P_model ‖ Q_survey) = Σ_i p_i ln(p_i / q_i) (the paper's direction), both distributions
    smoothed by adding `smoothing` to every bin (options and safeguard) and renormalising, so
    that an option the survey never saw gives a large finite value instead of infinity."""
    p, q = normalised(model, smoothing), normalised(survey, smoothing)
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))


def kl_official(model: np.ndarray, survey: np.ndarray) -> float:
    """The CLCA code's value: `torch.nn.functional.kl_div(log_softmax(p_model), p_survey)` with
    torch's default reduction (mean over the bins). This is KL(survey ‖ softmax(p_model)) — the
    reverse direction, with the model's *probabilities* passed through another softmax (which
    flattens them) — divided by the number of bins. Kept for comparing with published numbers."""
    p = normalised(model)
    s = normalised(survey)
    log_q = p - np.log(np.sum(np.exp(p)))  # log_softmax of the probability vector
    terms = np.where(s > 0, s * (np.log(np.where(s > 0, s, 1.0)) - log_q), 0.0)
    return float(terms.mean())


def js_distance(model: np.ndarray, survey: np.ndarray) -> float:
    """Jensen–Shannon distance: the square root of the JS divergence (natural log), as
    `scipy.spatial.distance.jensenshannon`; symmetric, bounded by sqrt(ln 2), no smoothing needed."""
    p, q = normalised(model), normalised(survey)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log(a[nonzero] / m[nonzero])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def individual_accuracy(predicted: Sequence[int | None], actual: Sequence[int | None]) -> float:
    """Fraction of a persona's answers equal to what that respondent answered (pairs whose real
    answer is missing are left out; a safeguard answer is wrong)."""
    pairs = [(p, a) for p, a in zip(predicted, actual, strict=True) if a is not None]
    if not pairs:
        return float("nan")
    return sum(p == a for p, a in pairs) / len(pairs)


def cultural_distinctiveness(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """C-Dist of a cross-culture matrix M[adapter j, culture i's tasks] (Surveys→Narratives):
    n_i = M_ii / max_j M_ji — how close culture i's own adapter comes to the best adapter on its
    tasks — and C-Dist = mean_i n_i. Returns (C-Dist, n)."""
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a square adapter x culture matrix is needed, found shape {m.shape}")
    best = m.max(axis=0)
    n = np.divide(np.diag(m), best, out=np.zeros(len(m)), where=best > 0)
    return float(n.mean()), n
