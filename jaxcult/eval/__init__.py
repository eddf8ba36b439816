"""Metrics with official scoring definitions."""

from jaxcult.eval.squad import normalize_answer, squad_scores

__all__ = ["normalize_answer", "squad_scores"]
