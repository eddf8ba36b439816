"""Built-in schedules of "FUN with Fisher" (Liu et al., NAACL 2024), Algorithm 1.

The trainable set starts with the head (and, for most schedules, one adapter); every k steps a
SELECT adds groups; nothing is ever re-frozen; checks stop once every layer group trains.
"""

from __future__ import annotations

import numpy as np

from jaxcult.errors import UserError
from jaxcult.schedules.base import FisherFn, Schedule, register


@register("standard")
class Standard(Schedule):
    """Everything trainable from step 0."""

    def initial_groups(self) -> list[str]:
        return list(self.groups)

    def select(self, step, frozen, fisher):
        return [], "", {}


@register("gu")
class GradualUnfreezing(Schedule):
    """Head + top adapter at step 0, then the next lower adapter at k, 2k, ...

    `official_offset`: the official code's first firing (step k) is a no-op, so layer L-1-j
    opens at (j+1)k.
    """

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + self.layer_groups[-1:]

    def select(self, step, frozen, fisher):
        if self.config.official_offset and step == self.k:
            return [], "", {}
        return [frozen[-1]], "gradual unfreezing: next layer top-down", {}


@register("lpft")
class LinearProbeThenFinetune(Schedule):
    """Only the head for k steps, then every adapter at once."""

    def is_check(self, step: int) -> bool:
        return step == self.k

    def select(self, step, frozen, fisher):
        return list(frozen), "linear probing finished", {}


@register("fun")
class FisherUnfreezing(Schedule):
    """Head + top adapter at step 0; each check unfreezes the frozen group with the largest tr(F)."""

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + self.layer_groups[-1:]

    def select(self, step, frozen, fisher: FisherFn):
        traces = fisher()
        best = max(frozen, key=lambda g: traces[g])
        return [best], "largest tr(F) among frozen groups", {g: traces[g] for g in self.layer_groups}


@register("random")
class RandomUnfreezing(Schedule):
    """One uniformly random frozen group per check (seeded by seed and step: resumable)."""

    def _pick(self, step: int, candidates: list[str]) -> str:
        rng = np.random.default_rng([self.seed, step])
        return candidates[int(rng.integers(len(candidates)))]

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + [self._pick(0, self.layer_groups)]

    def select(self, step, frozen, fisher):
        return [self._pick(step, frozen)], "random frozen group", {}


@register("fixed")
class FixedOrder(Schedule):
    """An explicit order of layer indices (`order: [10, 2, ...]`, `top_down`, `bottom_up`)."""

    def __init__(self, groups, layer_groups, config, seed=0) -> None:
        super().__init__(groups, layer_groups, config, seed)
        n = len(self.layer_groups)
        order = config.order
        if order is None or order == "top_down":
            order = list(range(n - 1, -1, -1))
        elif order == "bottom_up":
            order = list(range(n))
        bad = [i for i in order if not 0 <= i < n]
        if bad or len(set(order)) != len(order):
            raise UserError(f"schedule.order: expected distinct layer indices in [0, {n - 1}], "
                            f"found {order}")
        self.order = [self.layer_groups[i] for i in order]

    def initial_groups(self) -> list[str]:
        return super().initial_groups() + self.order[:1]

    def select(self, step, frozen, fisher):
        remaining = [g for g in self.order if g in frozen]
        return remaining[:1], "fixed order", {}
