"""A user schedule whose seeds disagree about tr(F): odd seeds unfreeze by it (FUN), even seeds
top-down (GU) without asking for it, so vectorised seeds need tr(F) at a step for some seeds
only (the others' Fisher batch streams must stay their separate runs')."""

from __future__ import annotations

from jaxcult.schedules.builtin import FisherUnfreezing, GradualUnfreezing


class FunOnOddSeeds(FisherUnfreezing):
    def select(self, step, frozen, fisher):
        if self.seed % 2:
            return super().select(step, frozen, fisher)
        return GradualUnfreezing.select(self, step, frozen, fisher)
