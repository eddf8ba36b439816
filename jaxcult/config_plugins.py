"""Each plug-in's own settings: the plug-in sections of a config tree validated by the settings
class of the plug-in they name, and the checks that depend on which plug-in runs.

A plug-in family's section (`task`, `data`, `schedule`, every `probes[]` entry, every
`task.evaluators[]` entry) names its plug-in with `name` (left out: the family's default); the
plug-in's `Settings` class (a subclass of the family's section in `jaxcult.config`) declares
every other key. Built-ins and user plug-ins (`pkg.mod:Class`) go through the same path. Errors
come back as pydantic-style error dicts with the key path from the top of the config, plus
`fields` (the keys the plug-in declares) and `plugin` (who refused the key), so the loader
reports them like any other config error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from jaxcult.config import (
    DataConfig,
    EvaluatorConfig,
    PluginSection,
    ProbeConfig,
    RunConfig,
    ScheduleConfig,
    TaskConfig,
)
from jaxcult.config_aliases import drop_retired
from jaxcult.errors import UserError
from jaxcult.registry import Registry


@dataclass(frozen=True)
class Slot:
    """Where a plug-in family's section sits in a run config."""

    key: str                   # `task`, `probes`: the config key
    family: str                # the registry's words for it, in messages
    section: type[PluginSection]  # what every member of the family reads


TASK, DATA, SCHEDULE = (Slot("task", "task family", TaskConfig), Slot("data", "dataset", DataConfig),
                        Slot("schedule", "schedule", ScheduleConfig))
PROBES = Slot("probes", "probe", ProbeConfig)                     # a list of sections
EVALUATORS = Slot("evaluators", "evaluator", EvaluatorConfig)     # a list inside `task`


def registry_of(slot: Slot) -> Registry:
    """The registry of a slot's family (imported here: the plug-in layers sit above config)."""
    if slot is TASK:
        from jaxcult.tasks import TASKS
        return TASKS
    if slot is DATA:
        from jaxcult.data import DATASETS
        return DATASETS
    if slot is SCHEDULE:
        from jaxcult.schedules import SCHEDULES
        return SCHEDULES
    if slot is PROBES:
        from jaxcult.probes import PROBES as probes
        return probes
    from jaxcult.eval import EVALUATORS as evaluators
    return evaluators


def plugin_class(slot: Slot, name: str | None, key: str) -> Any:
    """The plug-in a section names (its family's default when it names none)."""
    return registry_of(slot).get(name, f"{key}.name")


def _errors_of(exc: ValidationError, loc: tuple, plugin: str, settings: type,
               family: type) -> list[dict]:
    own = [f for f in settings.model_fields if f not in family.model_fields]
    return [{**err, "loc": (*loc, *err["loc"]), "plugin": plugin,
             "fields": list(settings.model_fields), "own": own} for err in exc.errors()]


class Typing:
    """Validates the plug-in sections of one config tree, collecting errors."""

    def __init__(self) -> None:
        self.errors: list[dict] = []
        self.classes: dict[str, Any] = {}   # slot key -> the plug-in class(es) it named

    def section(self, slot: Slot, raw: Any, loc: tuple, extra: dict | None = None) -> Any:
        """`raw` validated by its plug-in's settings class (the section as given when it is
        not a mapping: the run config's own validation reports that)."""
        if not isinstance(raw, dict):
            return raw
        key = ".".join(map(str, loc))
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            return raw
        plugin = plugin_class(slot, name, key)
        settings = plugin.Settings
        name = registry_of(slot).name_or_default(name, key)
        self.classes.setdefault(slot.key, []).append(plugin)
        values = {**drop_retired(slot.key, raw, set(settings.model_fields)), **(extra or {}),
                  "name": name}
        try:
            return settings.model_validate(values)
        except ValidationError as exc:
            self.errors.extend(_errors_of(exc, loc, f"{slot.family} {name!r}", settings,
                                          slot.section))
            return None

    def task(self, raw: Any) -> Any:
        """The task section, its evaluators typed first (default: the family's own)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name", ""), str | None):
            return raw
        family = plugin_class(TASK, raw.get("name"), "task")
        given = raw.get("evaluators") or [{}]
        if not isinstance(given, list):
            return raw
        own = {"name": family.evaluator}  # an entry that names no evaluator: the family's
        evaluators = [self.section(EVALUATORS, {"name": e} if isinstance(e, str) else
                                   {**own, **e} if isinstance(e, dict) and e.get("name") is None
                                   else e, ("task", "evaluators", i))
                      for i, e in enumerate(given)]
        if any(e is None for e in evaluators):
            evaluators = []
        return self.section(TASK, {k: v for k, v in raw.items() if k != "evaluators"},
                            ("task",), {"evaluators": evaluators})


def typed_tree(tree: dict) -> tuple[dict, list[dict], dict[str, Any]]:
    """(tree with every plug-in section typed, errors, slot key -> plug-in classes)."""
    typing = Typing()
    typed = dict(tree)
    typed["task"] = typing.task(tree.get("task", {}))
    for slot in (DATA, SCHEDULE):
        typed[slot.key] = typing.section(slot, tree.get(slot.key, {}), (slot.key,))
    probes = tree.get("probes", [])
    if isinstance(probes, list):
        typed["probes"] = [typing.section(PROBES, p, ("probes", i)) for i, p in enumerate(probes)]
    if typing.errors:
        return tree, typing.errors, typing.classes
    return typed, [], typing.classes


def _value_error(message: str) -> dict:
    return {"type": "value_error", "loc": (), "msg": message, "ctx": {"error": message}}


def plugin_checks(config: RunConfig, classes: dict[str, Any]) -> list[dict]:
    """Settings whose effect depends on which plug-in runs: the Fisher settings take effect
    only when tr(F) is computed (a schedule that reads it, or `fisher.track_every`); a random
    model's `model.overrides` are its architecture's settings (a pretrained model's are
    checked once its config.json is read, before its weights)."""
    from jaxcult import models
    from jaxcult.eval import report_names

    model_type = config.model.overrides.get("model_type")
    try:
        report_names(config.task.evaluators)
        for task in classes.get("task", []):
            task.check_run(config)
        if config.model.name == "random" and model_type in models.known_model_types():
            models.architecture_for(model_type).check_settings(config.model.overrides,
                                                               "model.overrides")
    except (UserError, ValueError) as error:
        return [_value_error(str(error))]
    schedule = classes.get("schedule", [None])[0]
    reads = bool(getattr(schedule, "reads_fisher", False)) or config.fisher.track_every > 0
    if reads and not all(task.has_fisher for task in classes.get("task", [])):
        reader = (f"schedule.name={config.schedule.name}" if config.fisher.track_every == 0
                  else f"fisher.track_every={config.fisher.track_every}")
        return [_value_error(f"{reader} reads tr(F), and task.name={config.task.name} defines no "
                             f"Fisher output distribution; set schedule.name=standard (or another "
                             f"schedule that reads none) and fisher.track_every=0")]
    try:
        config.fisher.refuse_unused(
            "fisher", ("estimator", "num_batches", "batch_size", "one_pass"), reads,
            f"when tr(F) is computed (schedule.name={config.schedule.name} does not read it; "
            f"fisher.track_every > 0 logs it)")
    except ValueError as error:
        return [_value_error(str(error))]
    return []
