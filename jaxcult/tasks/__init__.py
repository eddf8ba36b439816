"""Task families: the head-independent half of a task (loss, Fisher outputs, metrics)."""

from __future__ import annotations

from jaxcult.errors import UserError
from jaxcult.tasks.base import Task
from jaxcult.tasks.causal_lm import CausalLMTask
from jaxcult.tasks.choice import ChoiceTask

CHOICE_TASKS = ("classification", "pair_classification", "multiple_choice")


def task_for(name: str) -> Task:
    if name in CHOICE_TASKS:
        return ChoiceTask(name)
    if name == "causal_lm":
        return CausalLMTask()
    raise UserError(f"task.name: {name!r} is not available in the trainer yet "
                    f"(available: {', '.join(CHOICE_TASKS)}, causal_lm)")


__all__ = ["CHOICE_TASKS", "CausalLMTask", "ChoiceTask", "Task", "task_for"]
