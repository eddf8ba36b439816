"""The schedule protocol and registry.

A schedule is built from the ordered group list (`head` first, then layer groups bottom-up)
and its config. Before every step where `is_check(step)` holds, the host loop calls `decide(step, mask,
fisher)`; the schedule returns None (nothing to do) or a `Decision` with the new mask and the
events to log. Between checks the loop never reads the mask back from the device.
`fisher()` computes per-group tr(F) on demand (only FUN-like schedules call it). Nothing in a
schedule touches devices: the mask it returns is copied into the train state as data, so
unfreezing never recompiles the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxcult.config import ScheduleConfig, settings_as
from jaxcult.registry import Registry

FisherFn = Callable[[], dict[str, float]]


@dataclass
class Decision:
    mask: np.ndarray
    events: list[dict[str, Any]] = field(default_factory=list)


class Schedule:
    """Base class: subclasses implement `initial_groups` and `select`; their own settings are
    their `Settings` (a subclass of `ScheduleConfig`); `reads_fisher` says whether `select`
    calls `fisher()` (the Fisher settings only take effect then); `opens_layers_apart` whether
    it ever trains some layer groups while others stay frozen (a scanned layer stack has one group)."""

    Settings: type[ScheduleConfig] = ScheduleConfig
    reads_fisher = False
    opens_layers_apart = True  # some layers train while others wait (needs per-layer groups)

    def __init__(self, groups: list[str], layer_groups: list[str], settings: ScheduleConfig,
                 seed: int = 0) -> None:
        self.groups = list(groups)
        self.layer_groups = list(layer_groups)  # bottom-up: index 0 = lowest layer
        self.settings = settings_as(settings, self.Settings, "schedule")
        self.k = self.settings.k
        self.official = self.settings.official_offset
        self.seed = seed  # the run's (trainer.seed)

    # -- to override -------------------------------------------------------------------------
    def initial_groups(self) -> list[str]:
        """Groups trainable at step 0 (before any check): the head and modules saved in full."""
        return [g for g in self.groups if g == "head" or g.startswith("saved/")]

    def select(self, step: int, frozen: list[str], fisher: FisherFn) -> tuple[list[str], str, dict]:
        """(groups to unfreeze, reason, tr(F) values used) at a check step."""
        raise NotImplementedError

    def is_check(self, step: int) -> bool:
        """Before 0-based step k, 2k, ... (Algorithm 1); with `official_offset`, before steps
        k-1, 2k-1, ... as the official trainer (`(global_step + 1) % k == 0`)."""
        if self.official:
            return (step + 1) % self.k == 0
        return step > 0 and step % self.k == 0

    # -- shared machinery ----------------------------------------------------------------------
    def index(self, group: str) -> int:
        return self.groups.index(group)

    def mask_of(self, names: list[str]) -> np.ndarray:
        mask = np.zeros(len(self.groups), dtype=bool)
        for name in names:
            mask[self.index(name)] = True
        return mask

    def start(self) -> Decision:
        names = self.initial_groups()
        event = {"step": 0, "event": "unfreeze", "groups": names, "reason": "initial", "fisher": {}}
        return Decision(self.mask_of(names), [event])

    def decide(self, step: int, mask: np.ndarray, fisher: FisherFn) -> Decision | None:
        frozen = [g for g in self.layer_groups if not mask[self.index(g)]]
        if not frozen or not self.is_check(step):
            return None
        chosen, reason, used = self.select(step, frozen, fisher)
        if not chosen:
            return None
        new_mask = mask.copy()
        for name in chosen:
            new_mask[self.index(name)] = True
        event = {"step": step, "event": "unfreeze", "groups": chosen, "reason": reason,
                 "fisher": used}
        return Decision(new_mask, [event])

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


SCHEDULES: Registry[type[Schedule]] = Registry(
    "schedule", check=lambda entry: isinstance(entry, type) and issubclass(entry, Schedule))


def register(name: str, *, default: bool = False) -> Callable[[type[Schedule]], type[Schedule]]:
    """Class decorator: register a `Schedule` subclass under `name`."""
    return SCHEDULES.register(name, default=default)


def registered() -> list[str]:
    return SCHEDULES.names()


def resolve(name: str | None) -> type[Schedule]:
    """A registry name, or `package.module:ClassName` for a user schedule."""
    return SCHEDULES.get(name, "schedule.name")
