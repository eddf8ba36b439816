"""Preference pairs: the objective's loss and the implicit rewards on a held-out split.

The task computes each pair's loss and its chosen and rejected rewards (`Preference.
evaluation_outputs`); this evaluator averages them over the split with TRL's names beside
`accuracy` (the share of pairs whose chosen reward is the higher: `rewards/accuracies`). The
best checkpoint has the lowest loss.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxcult.data.batching import Split
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator


@register_evaluator("preference")
class PreferenceScores(Evaluator):
    primary_metric = "loss"
    maximize = False

    def device_outputs(self, outputs: dict, batch: dict) -> dict[str, jax.Array]:
        return {"loss": outputs["loss"], "rewards": outputs["rewards"], "logps": outputs["logps"]}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        rewards, logps = results["rewards"], results["logps"]
        wins = float((rewards[:, 0] > rewards[:, 1]).mean())
        return {"loss": float(results["loss"].mean()), "accuracy": wins,
                "rewards/accuracies": wins, "rewards/chosen": float(rewards[:, 0].mean()),
                "rewards/rejected": float(rewards[:, 1].mean()),
                "rewards/margins": float((rewards[:, 0] - rewards[:, 1]).mean()),
                "logps/chosen": float(logps[:, 0].mean()),
                "logps/rejected": float(logps[:, 1].mean())}
