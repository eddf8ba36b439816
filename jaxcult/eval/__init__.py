"""Evaluators (the registry and the built-ins) and metrics with official scoring definitions.

Importing this package registers the built-in evaluators: `accuracy`, `macro_f1`, `perplexity`,
`preference`, `squad`, `vqa`.
"""

from jaxcult.eval import accuracy as _accuracy  # noqa: F401  (registers)
from jaxcult.eval import classes as _classes  # noqa: F401  (registers)
from jaxcult.eval import perplexity as _perplexity  # noqa: F401  (registers)
from jaxcult.eval import preference as _preference  # noqa: F401  (registers)
from jaxcult.eval import span_qa as _span_qa  # noqa: F401  (registers)
from jaxcult.eval import vqa as _vqa  # noqa: F401  (registers)
from jaxcult.eval.base import (
    EVALUATORS,
    Evaluator,
    Evaluators,
    Metrics,
    register_evaluator,
    report_names,
    resolve_evaluator,
    resolve_evaluators,
    scalar_metrics,
)
from jaxcult.eval.squad import normalize_answer, squad_scores

__all__ = ["EVALUATORS", "Evaluator", "Evaluators", "Metrics", "normalize_answer",
           "register_evaluator", "report_names", "resolve_evaluator", "resolve_evaluators", "scalar_metrics",
           "squad_scores"]
