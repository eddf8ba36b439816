"""Extractive QA: start/end classification over the tokens of doc-stride windows.

Training minimises the mean of the start and end cross-entropies (labels [batch, 2]). The Fisher
output distribution is the pair of categoricals (start, end), their log-probabilities summed.
Evaluation (span decoding, SQuAD/MLQA scores) is the `squad` evaluator's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field

from jaxcult.config import TaskConfig
from jaxcult.data import squad
from jaxcult.data.batching import Split
from jaxcult.models.classifier import SpanExtractor
from jaxcult.tasks.base import (
    ModelInputs,
    Task,
    categorical,
    categorical_log_probs,
    encoder_forward,
    register_task,
)


class ExtractiveQASettings(TaskConfig):
    doc_stride: int = Field(128, gt=0, description="tokens between the starts of a long "
                            "context's windows")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the encoder's output "
                                "before the start/end projection (transformers' QA models have "
                                "none; jaxcult applied 0.1 before this switch)")


@register_task("extractive_qa")
class ExtractiveQA(Task):
    Settings = ExtractiveQASettings
    record_formats = ("squad",)
    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    evaluator = "squad"
    uses_labels = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return squad.tokenize_windows(records, tokenizer, max_length, self.settings.doc_stride, name)

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        return SpanExtractor(backbone, dropout_rate=self.settings.head_dropout, seed=inputs.seed)

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Token windows; `labels` are each window's (start, end)."""
        return {**super().plan_batch(rows, length), "labels": jax.ShapeDtypeStruct((rows, 2), jnp.int32)}

    def forward(self, model, batch, dropout_key):
        return encoder_forward(model, batch, dropout_key)

    def log_probs(self, outputs, batch):
        return categorical_log_probs(outputs, batch)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits, loss = categorical(outputs, batch)
        return loss, (logits.argmax(-1) == batch["labels"]).all(-1).mean()
