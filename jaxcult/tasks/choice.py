"""Tasks with one categorical answer per example: (pair) classification and multiple choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


class ChoiceTask:
    """Logits [batch, classes] (classes = labels, or the choices of a multiple-choice item)."""

    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    primary_metric = "accuracy"
    maximize = True

    def __init__(self, name: str) -> None:
        self.name = name

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                     dropout_key=dropout_key)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits = outputs.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return loss, (logits.argmax(-1) == batch["labels"]).mean()

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, None]:
        return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), None

    def eval_sums(self, outputs: jax.Array, batch: dict, valid: jax.Array) -> dict[str, jax.Array]:
        hits = (outputs.argmax(-1) == batch["labels"]) & valid
        return {"correct": hits.sum(), "count": valid.sum()}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"accuracy": sums["correct"] / max(sums["count"], 1)}
