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


def kl_paper_direction(model: np.ndarray, survey: np.ndarray,
                       smoothing: float = DEFAULT_SMOOTHING) -> float:
    """KL(P_model ‖ Q_survey) = Σ_i p_i ln(p_i / q_i), the direction the CLCA paper prints, over
    the answer options: the safeguard bin is left out (its share is reported on its own as the
    parse-failure rate; respondents have none, so any parse failure would otherwise dominate)
    and both renormalised; an option no respondent chose gets probability `smoothing`, so a
    model choosing it gives a large finite value. NaN when the model never gave an option."""
    p_counts = np.asarray(model, np.float64)[:-1]
    if p_counts.sum() <= 0:
        return float("nan")
    p, q = normalised(p_counts), normalised(np.asarray(survey, np.float64)[:-1])
    q = normalised(np.maximum(q, smoothing))
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))


def kl_official(model: np.ndarray, survey: np.ndarray) -> float:
    """Exactly the value of the CLCA code (its Table 2): `torch.nn.functional.kl_div(
    log_softmax(p_model), p_survey, reduction="batchmean")` on one distribution, i.e. the sum
    over the bins (options and safeguard) of KL(survey ‖ softmax(P_model)) — the reverse of the
    printed direction, with the model's *probabilities* passed through another softmax (which
    flattens them, so the value stays small and finite whatever the model answers)."""
    p = normalised(model)
    s = normalised(survey)
    log_q = p - np.log(np.sum(np.exp(p)))  # log_softmax of the probability vector
    terms = np.where(s > 0, s * (np.log(np.where(s > 0, s, 1.0)) - log_q), 0.0)
    return float(terms.sum())


def js_distance(model: np.ndarray, survey: np.ndarray) -> float:
    """Jensen–Shannon distance: the square root of the JS divergence (natural log), as
    `scipy.spatial.distance.jensenshannon`; symmetric, bounded by sqrt(ln 2), no smoothing needed."""
    p, q = normalised(model), normalised(survey)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log(a[nonzero] / m[nonzero])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def individual_accuracy(predicted: Sequence[Sequence[int | None]],
                        actual: Sequence[Sequence[int | None]]) -> float:
    """The CLCA code's rule: per persona, the share of *all* the survey's questions answered as
    that respondent did (a missing real answer and a safeguard answer are both wrong), then the
    mean over personas. Arguments: one list of answers per persona, questions in one order."""
    scores = [sum(p is not None and p == a for p, a in zip(mine, theirs, strict=True)) / len(mine)
              for mine, theirs in zip(predicted, actual, strict=True) if mine]
    return float(np.mean(scores)) if scores else float("nan")


def answered_accuracy(predicted: Sequence[int | None], actual: Sequence[int | None]) -> float:
    """jaxcult's earlier rule, kept as a second number: all (persona, question) pairs pooled,
    pairs whose real answer is missing left out (a safeguard answer is wrong)."""
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
