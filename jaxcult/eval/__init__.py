"""Evaluators (the registry and the built-ins) and metrics with official scoring definitions.

Importing this package registers the built-in evaluators: `accuracy`, `perplexity`, `squad`.
"""

from jaxcult.eval import accuracy as _accuracy  # noqa: F401  (registers)
from jaxcult.eval import perplexity as _perplexity  # noqa: F401  (registers)
from jaxcult.eval import span_qa as _span_qa  # noqa: F401  (registers)
from jaxcult.eval import vqa as _vqa  # noqa: F401  (registers)
from jaxcult.eval.base import (
    EVALUATORS,
    Evaluator,
    Metrics,
    register_evaluator,
    resolve_evaluator,
    scalar_metrics,
)
from jaxcult.eval.squad import normalize_answer, squad_scores

__all__ = ["EVALUATORS", "Evaluator", "Metrics", "normalize_answer", "register_evaluator",
           "resolve_evaluator", "scalar_metrics", "squad_scores"]
