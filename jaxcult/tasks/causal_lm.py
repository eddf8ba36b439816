"""Causal language modelling: next-token prediction on the positions `loss_mask` selects.

Batches hold `labels` [batch, len] = the next token of each position and `loss_mask` = 1 where
that prediction is trained (real text; for chat data only assistant turns). Evaluation reports
per-token loss, perplexity and next-token accuracy; the best checkpoint has the lowest loss.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


class CausalLMTask:
    name = "causal_lm"
    batch_keys = ("input_ids", "attention_mask", "labels", "loss_mask")
    primary_metric = "loss"
    maximize = False

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        return model(batch["input_ids"], batch["attention_mask"], dropout_key=dropout_key).logits

    def _token_stats(self, outputs: jax.Array, batch: dict):
        logits = outputs.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        hits = logits.argmax(-1) == batch["labels"]
        return nll, hits, batch["loss_mask"].astype(jnp.float32)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        nll, hits, mask = self._token_stats(outputs, batch)
        tokens = jnp.maximum(mask.sum(), 1.0)
        return (nll * mask).sum() / tokens, (hits * mask).sum() / tokens

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        return jax.nn.log_softmax(outputs.astype(jnp.float32), -1), batch["loss_mask"]

    def eval_sums(self, outputs: jax.Array, batch: dict, valid: jax.Array) -> dict[str, jax.Array]:
        nll, hits, mask = self._token_stats(outputs, batch)
        mask = mask * valid[:, None]
        return {"nll": (nll * mask).sum(), "correct": (hits * mask).sum(), "tokens": mask.sum()}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        tokens = max(sums["tokens"], 1.0)
        loss = sums["nll"] / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "token_accuracy": sums["correct"] / tokens}
