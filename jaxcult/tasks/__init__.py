"""Task families: the head-independent half of a task (loss, Fisher outputs, metrics)."""

from __future__ import annotations

from jaxcult.config import TaskConfig
from jaxcult.errors import UserError
from jaxcult.tasks.base import Task
from jaxcult.tasks.causal_lm import CausalLMTask
from jaxcult.tasks.choice import ChoiceTask
from jaxcult.tasks.span_qa import SpanQATask

CHOICE_TASKS = ("classification", "pair_classification", "multiple_choice")


def task_for(config: TaskConfig) -> Task:
    if config.name in CHOICE_TASKS:
        return ChoiceTask(config.name)
    if config.name == "causal_lm":
        return CausalLMTask()
    if config.name == "extractive_qa":
        return SpanQATask(config.n_best, config.max_answer_length)
    raise UserError(f"task.name: {config.name!r} is not available in the trainer yet "
                    f"(available: {', '.join(CHOICE_TASKS)}, causal_lm, extractive_qa)")


__all__ = ["CHOICE_TASKS", "CausalLMTask", "ChoiceTask", "SpanQATask", "Task", "task_for"]
