"""Built-in schedules of "FUN with Fisher" (Liu et al., NAACL 2024): Algorithm 1, and the
official code's timing and orders as switches.

The trainable set starts with the head (and, for most schedules, the top adapter); every k steps
a SELECT adds groups; nothing is ever re-frozen; checks stop once every layer group trains.
With `official_offset` the checks come one step earlier, as in the official trainer (it runs the
unfreezing block at the start of a step when `(global_step + 1) % k == 0`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from jaxcult.config import ScheduleConfig
from jaxcult.errors import UserError
from jaxcult.schedules.base import FisherFn, Schedule, register

# The official code's fixed orders (its RAND_SCHEDULE table) for 12-layer models; each lists
# the 11 layers below the top one, which opens first.
OFFICIAL_ORDERS: dict[str, list[int]] = {
    "schedule-0": [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    "schedule-1": [10, 2, 6, 5, 8, 3, 7, 0, 1, 9, 4],
    "schedule-2": [9, 6, 2, 4, 5, 8, 7, 10, 1, 3, 0],
    "schedule-3": [9, 7, 0, 10, 5, 8, 2, 4, 1, 3, 6],
    "schedule-4": [10, 5, 4, 7, 1, 9, 0, 8, 3, 2, 6],
    "schedule-5": [10, 8, 1, 6, 7, 2, 0, 5, 4, 9, 3],
    "schedule-6": [10, 4, 7, 5, 3, 0, 6, 2, 9, 8, 1],
    "schedule-7": [10, 1, 0, 3, 9, 6, 8, 2, 5, 7, 4],
    "schedule-8": [10, 9, 3, 5, 0, 4, 1, 8, 6, 7, 2],
    "schedule-9": [10, 7, 0, 3, 4, 8, 1, 2, 6, 5, 9],
    "schedule-rev": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
}


FIXED_PRESETS = tuple(OFFICIAL_ORDERS)


class StandardSettings(ScheduleConfig):
    @model_validator(mode="after")
    def _no_checks(self) -> StandardSettings:
        self.refuse_unused("schedule", ("official_offset",), False,
                           "to scheduled unfreezing (not schedule.name=standard)")
        return self


@register("standard")
class Standard(Schedule):
    """Everything trainable from step 0."""

    Settings = StandardSettings
    opens_layers_apart = False

    def initial_groups(self) -> list[str]:
        return list(self.groups)

    def select(self, step, frozen, fisher):
        return [], "", {}


class _TopFirst(Schedule):
    """Head (and saved modules) plus the top layer group from step 0."""

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + self.layer_groups[-1:]


@register("gu")
class GradualUnfreezing(_TopFirst):
    """Head + top adapter at step 0, then the next lower adapter at each check.

    Official timing: the first check (before step k-1) finds the top layer already open, so
    layer j (of L) first trains at 0-based step (L - j) k - 1.
    """

    def select(self, step, frozen, fisher):
        if self.official and step == self.k - 1:
            return [], "", {}
        return [frozen[-1]], "gradual unfreezing: next layer top-down", {}


@register("lpft")
class LinearProbeThenFinetune(Schedule):
    """Only the head until the first check (k probe steps; k - 1 with the official timing),
    then every adapter at once."""

    opens_layers_apart = False

    def is_check(self, step: int) -> bool:
        return step == (self.k - 1 if self.official else self.k)

    def select(self, step, frozen, fisher):
        return list(frozen), "linear probing finished", {}


@register("fun", default=True)
class FisherUnfreezing(_TopFirst):
    """Head + top adapter at step 0; each check unfreezes the frozen group with the largest tr(F)."""

    reads_fisher = True

    def select(self, step, frozen, fisher: FisherFn):
        traces = fisher()
        best = max(frozen, key=lambda g: traces[g])
        return [best], "largest tr(F) among frozen groups", {g: traces[g] for g in self.layer_groups}


class RandomSettings(ScheduleConfig):
    random_first: bool = Field(
        False, description="the first layer is drawn too (default: head + top layer first, as "
        "the official code)")
    seed: int | None = Field(None, description="seed of the draws; default trainer.seed")


@register("random")
class RandomUnfreezing(Schedule):
    """Head + top adapter at step 0 (as the official `rand`; `random_first`: a random layer),
    then one uniformly random frozen group per check (seeded by seed and step: resumable)."""

    Settings = RandomSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.settings.seed is not None:
            self.seed = self.settings.seed

    def _pick(self, step: int, candidates: list[str]) -> str:
        rng = np.random.default_rng([self.seed, step])
        return candidates[int(rng.integers(len(candidates)))]

    def initial_groups(self) -> list[str]:
        first = (self._pick(0, self.layer_groups) if self.settings.random_first
                 else self.layer_groups[-1])
        return super().initial_groups() + [first]

    def select(self, step, frozen, fisher):
        return [self._pick(step + 1, frozen)], "random frozen group", {}


def fixed_order(order, n: int) -> list[int]:
    """Layer indices to open, in order: a full permutation of 0..n-1, or (as the official
    presets) the n-1 layers below the top one, which then opens first."""
    if order is None or order == "top_down":
        return list(range(n - 1, -1, -1))
    if order == "bottom_up":
        return list(range(n))
    if isinstance(order, str):  # an official preset
        if n != 12:
            raise UserError(f"schedule.order: {order} is the official order for 12 layers; this "
                            f"model has {n}")
        order = OFFICIAL_ORDERS[order]
    if len(set(order)) != len(order) or any(not 0 <= i < n for i in order):
        raise UserError(f"schedule.order: expected distinct layer indices in [0, {n - 1}], "
                        f"found {order}")
    if sorted(order) == list(range(n - 1)):
        return [n - 1, *order]  # the official code opens the top layer before the list
    if sorted(order) != list(range(n)):
        missing = sorted(set(range(n)) - set(order))
        raise UserError(f"schedule.order: layers {missing} never open; list all {n} layers, or "
                        f"the {n - 1} below the top one (which then opens first)")
    return list(order)


class FixedSettings(ScheduleConfig):
    order: list[int] | Literal[("top_down", "bottom_up", *FIXED_PRESETS)] | None = Field(
        None, description="layer indices, top_down (the default), bottom_up, or an official "
        "preset schedule-0 ... schedule-9, schedule-rev (12-layer models; the top layer opens "
        "first)")


@register("fixed")
class FixedOrder(Schedule):
    """An explicit order of layer indices (`order: [10, 2, ...]`, `top_down`, `bottom_up`,
    or an official preset `schedule-0` ... `schedule-rev`)."""

    Settings = FixedSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = [self.layer_groups[i]
                      for i in fixed_order(self.settings.order, len(self.layer_groups))]

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + self.order[:1]

    def select(self, step, frozen, fisher):
        remaining = [g for g in self.order if g in frozen]
        return remaining[:1], "fixed order", {}
