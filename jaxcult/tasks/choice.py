"""Tasks with one categorical answer per example: (pair) classification and multiple choice."""

from __future__ import annotations

import jax

from jaxcult.tasks.base import categorical, categorical_log_probs, encoder_forward


class ChoiceTask:
    """Logits [batch, classes] (classes = labels, or the choices of a multiple-choice item)."""

    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    primary_metric = "accuracy"
    maximize = True

    def __init__(self, name: str) -> None:
        self.name = name

    forward = staticmethod(encoder_forward)
    log_probs = staticmethod(categorical_log_probs)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits, loss = categorical(outputs, batch)
        return loss, (logits.argmax(-1) == batch["labels"]).mean()


    def eval_sums(self, outputs: jax.Array, batch: dict, valid: jax.Array) -> dict[str, jax.Array]:
        hits = (outputs.argmax(-1) == batch["labels"]) & valid
        return {"correct": hits.sum(), "count": valid.sum()}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"accuracy": sums["correct"] / max(sums["count"], 1)}
