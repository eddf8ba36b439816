"""The evaluator protocol and registry: how a split's model outputs become metrics.

Evaluation runs in two halves. On device, inside the jitted evaluation step, an evaluator
reduces the model's raw outputs to small per-example arrays (`device_outputs`: a prediction, a
summed loss, ... — never a vocabulary-sized tensor). On the host it turns those arrays, one row
per example of the split in order, plus the split's own data (labels, records, language) into
metrics (`metrics`). Metrics are a dict of numbers; an evaluator may add nested dicts (per
question type, per group) that summaries keep but do not average. An evaluator's own settings
are its `Settings` (a subclass of `EvaluatorConfig`: the keys of its `task.evaluators` entry).
A run with several evaluators runs them as one (`Evaluators`): each reduces the same outputs
on device, each reports its metrics under its name, and the first chooses the best checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcult.config import EvaluatorConfig, settings_as
from jaxcult.data.batching import Split
from jaxcult.data.registry import DatasetInfo
from jaxcult.errors import UserError
from jaxcult.metrics import scalar_metrics
from jaxcult.registry import Registry, subclasses_of

Metrics = dict[str, Any]


class Evaluator:
    """Base class of evaluators; `primary_metric` selects the best validation checkpoint."""

    name = "evaluator"
    primary_metric = "accuracy"
    maximize = True
    sequence_outputs: tuple[str, ...] = ()  # device outputs whose last axis is the sequence
    Settings: type[EvaluatorConfig] = EvaluatorConfig  # its own settings (a subclass adds fields)

    def __init__(self, settings: EvaluatorConfig, info: DatasetInfo) -> None:
        self.settings = settings_as(settings, self.Settings, "task.evaluators[]")
        self.info = info

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        """Per-example arrays [batch, ...] computed on device (jitted)."""
        raise NotImplementedError

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        """Metrics of the whole split from the per-example results (rows in split order)."""
        raise NotImplementedError

    def example_predictions(self, results: dict[str, np.ndarray], split: Split) -> Any:
        """Per-example predictions worth keeping, as JSON (written to the run's
        `predictions/<language>.json` after the final evaluation), or None (the default:
        nothing written)."""
        return None


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator", check=subclasses_of(Evaluator))


def register_evaluator(name: str, *, default: bool = False):
    """Class decorator: register an `Evaluator` subclass under `name` (sets its `name`)."""
    return EVALUATORS.named_class(name, default=default)


class Evaluators(Evaluator):
    """Several evaluators as one: every member reduces the same model outputs on device, and
    each reports its metrics (and keeps its predictions) under its name, `<name>/<metric>`;
    the first member's primary metric chooses the best checkpoint."""

    def __init__(self, members: list[Evaluator], names: list[str]) -> None:
        self.members, self.names = members, names
        self.name = "+".join(names)
        self.info = members[0].info
        self.primary_metric = f"{names[0]}/{members[0].primary_metric}"
        self.maximize = members[0].maximize
        self.sequence_outputs = tuple(f"{n}/{k}" for n, m in zip(names, members)
                                      for k in m.sequence_outputs)

    @staticmethod
    def _own(name: str, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k.removeprefix(f"{name}/"): v for k, v in results.items()
                if k.startswith(f"{name}/")}

    def device_outputs(self, outputs, batch: dict) -> dict[str, jax.Array]:
        return {f"{name}/{key}": value for name, member in zip(self.names, self.members)
                for key, value in member.device_outputs(outputs, batch).items()}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        return {f"{name}/{key}": value for name, member in zip(self.names, self.members)
                for key, value in member.metrics(self._own(name, results), split).items()}

    def example_predictions(self, results: dict[str, np.ndarray], split: Split) -> Any:
        kept = {name: member.example_predictions(self._own(name, results), split)
                for name, member in zip(self.names, self.members)}
        kept = {name: rows for name, rows in kept.items() if rows is not None}
        return kept or None


def resolve_evaluator(settings: EvaluatorConfig, info: DatasetInfo) -> Evaluator:
    """The evaluator an entry of `task.evaluators` names (registered, or `pkg.mod:Class`)."""
    evaluator = EVALUATORS.get(settings.name, "task.evaluators[].name")(settings, info)
    if settings.name is not None and ":" in settings.name:
        evaluator.name = settings.name
    return evaluator


def report_names(entries: list[EvaluatorConfig]) -> list[str]:
    """The name each entry of `task.evaluators` reports under (`report_as`, default its name);
    two entries reporting as one name are refused."""
    names = [settings.report_as or settings.name or EVALUATORS.default for settings in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"task.evaluators: two evaluators report as {twice[0]!r}; give one of "
                        f"them report_as")
    return names


def resolve_evaluators(entries: list[EvaluatorConfig], info: DatasetInfo) -> Evaluator:
    """The run's evaluator: the one entry, or every entry as one `Evaluators`, each reporting
    under its `report_names` name."""
    members = [resolve_evaluator(entry, info) for entry in entries]
    return members[0] if len(members) == 1 else Evaluators(members, report_names(entries))


__all__ = ["EVALUATORS", "Evaluator", "Evaluators", "Metrics", "register_evaluator",
           "resolve_evaluator", "resolve_evaluators", "scalar_metrics"]
