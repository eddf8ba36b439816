"""Task families (the registry and the built-ins): tokenisation, head, loss, Fisher outputs.

Importing this package registers `classification`, `pair_classification`, `multiple_choice`,
`extractive_qa`, `causal_lm`, `masked_lm`, `preference` and `vqa`.
"""

from __future__ import annotations

from jaxcult.tasks import causal_lm as _causal_lm  # noqa: F401  (registers)
from jaxcult.tasks import choice as _choice  # noqa: F401  (registers)
from jaxcult.tasks import masked_lm as _masked_lm  # noqa: F401  (registers)
from jaxcult.tasks import preference as _preference  # noqa: F401  (registers)
from jaxcult.tasks import span_qa as _span_qa  # noqa: F401  (registers)
from jaxcult.tasks import vqa as _vqa  # noqa: F401  (registers)
from jaxcult.tasks.base import (
    TASKS,
    ExportedHead,
    Loaders,
    ModelInputs,
    Task,
    register_task,
    resolve_task,
)

__all__ = ["TASKS", "ExportedHead", "Loaders", "ModelInputs", "Task", "register_task",
           "resolve_task"]
