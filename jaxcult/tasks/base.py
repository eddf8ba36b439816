"""What a task family tells the trainer: how to run the model on a batch, the loss, the
Fisher output distribution and how evaluation sums combine into metrics.

The trainer's jitted steps are written once against this interface; classification, multiple
choice, causal LM (and span QA) differ only here.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import optax


class Task(Protocol):
    name: str
    batch_keys: tuple[str, ...]   # the arrays a training batch holds
    primary_metric: str           # selects the best validation checkpoint
    maximize: bool                # whether a larger primary metric is better

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        """The model's raw outputs for a batch (logits)."""

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(mean training loss, a training metric in [0, 1] logged as `accuracy`)."""

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array | None]:
        """Fisher output distribution: log-probs [batch, *positions, classes] and weights."""

    def eval_sums(self, outputs: jax.Array, batch: dict, valid: jax.Array) -> dict[str, jax.Array]:
        """Additive statistics of one evaluation batch (padding rows excluded by `valid`)."""

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics of a whole split from its summed statistics."""


def encoder_forward(model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
    """Run an encoder-based task model on token ids, mask and segment ids."""
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                 dropout_key=dropout_key)


def categorical(outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(float32 logits, mean cross-entropy at `batch["labels"]`) over the last axis."""
    logits = outputs.astype(jnp.float32)
    return logits, optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()


def categorical_log_probs(outputs: jax.Array, batch: dict) -> tuple[jax.Array, None]:
    """Fisher output distribution of categorical outputs (every position weighs 1)."""
    return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), None
