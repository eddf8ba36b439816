"""Language-model evaluation: per-token loss, perplexity and next-token accuracy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcult.data.batching import Split
from jaxcult.eval.base import Evaluator, Metrics, register_evaluator


@register_evaluator("perplexity")
class Perplexity(Evaluator):
    """Token-weighted over the positions `loss_mask` selects; the best checkpoint has the
    lowest loss."""

    primary_metric = "loss"
    maximize = False

    def device_outputs(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
        logits = outputs.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        mask = batch["loss_mask"].astype(jnp.float32)
        hits = (logits.argmax(-1) == batch["labels"]) * mask
        return {"nll": (nll * mask).sum(-1), "correct": hits.sum(-1), "tokens": mask.sum(-1)}

    def metrics(self, results: dict[str, np.ndarray], split: Split) -> Metrics:
        total = {k: float(np.sum(v, dtype=np.float64)) for k, v in results.items()}
        tokens = max(total["tokens"], 1.0)
        loss = total["nll"] / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                "token_accuracy": total["correct"] / tokens}
