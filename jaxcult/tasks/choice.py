"""Tasks with one categorical answer per example: (pair) classification and multiple choice."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field

from jaxcult import models
from jaxcult.config import TaskConfig
from jaxcult.data.batching import Split, tokenize_classification, tokenize_multiple_choice
from jaxcult.errors import UserError
from jaxcult.hub.adapterhub import classification_head
from jaxcult.models.classifier import MultipleChoiceModel, SequenceClassifier
from jaxcult.tasks.base import (
    ExportedHead,
    ModelInputs,
    Task,
    categorical,
    categorical_log_probs,
    encoder_forward,
    register_task,
)

ADAPTERHUB = "adapterhub"


class PooledHeadSettings(TaskConfig):
    """The pooled head of classification and multiple choice."""

    pooling: Literal["cls", "mean"] = Field(
        "cls", description="what the head reads: the first token, or the mean of the tokens")
    head: Literal["jaxcult", "hf"] = Field(
        "jaxcult", description="jaxcult: pooled dense + tanh + linear; hf: transformers' head for "
        "the architecture (BERT: pretrained pooler + linear, as the FUN code's AutoModelFor*)")


def head_style(settings: PooledHeadSettings, backbone: nnx.Module, multiple_choice: bool,
               source: str) -> str:
    """`task.head`: `jaxcult` (pooled dense + tanh + linear); `hf`: transformers' head of the
    architecture: BERT's (and every multiple-choice) head reads the pretrained pooler, RoBERTa /
    XLM-R's classification head is dense + tanh + linear on the first token."""
    if settings.head == "jaxcult":
        return "jaxcult"
    architecture = models.architecture_of(backbone.config)
    if multiple_choice or backbone.config.model_type in architecture.pooler_classifiers:
        if backbone.pooler is None:
            raise UserError(f"task.head: hf needs the pretrained pooler of {source!r}, whose "
                            f"checkpoint has none")
        return "pooler"
    return "jaxcult"


class _Categorical(Task):
    """Logits [batch, classes] (classes = labels, or the choices of a multiple-choice item)."""

    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
    Settings = PooledHeadSettings

    def forward(self, model, batch, dropout_key):
        return encoder_forward(model, batch, dropout_key)

    def log_probs(self, outputs, batch):
        return categorical_log_probs(outputs, batch)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits, loss = categorical(outputs, batch)
        return loss, (logits.argmax(-1) == batch["labels"]).mean()


@register_task("classification", default=True)
class Classification(_Categorical):
    """A sentence (or sentence pair) -> one of the dataset's labels; pooled head."""

    record_formats = ("text_label",)

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_classification(records, tokenizer, max_length, name, self.num_labels)

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        return SequenceClassifier(backbone, self.num_labels, pooling=self.settings.pooling,
                                  seed=inputs.seed, head=head_style(self.settings, backbone,
                                                                    False, inputs.source))

    def head_formats(self) -> tuple[str, ...]:
        """AdapterHub's classification head reads the first token through dense + tanh +
        linear: jaxcult's head with cls pooling (transformers' BERT head reads the pooler)."""
        cls_head = self.settings.pooling == "cls" and self.settings.head == "jaxcult"
        return (ADAPTERHUB,) if cls_head else ()

    def export_head(self, model: nnx.Module, fmt: str, name: str) -> ExportedHead:
        return classification_head(model, name, self.labels)


@register_task("pair_classification")
class PairClassification(Classification):
    """Classification of sentence pairs (PAWS-X, XNLI): the same model, its own name."""


@register_task("multiple_choice")
class MultipleChoice(_Categorical):
    """Each (context, choice) pair scored by the encoder + a one-logit head; softmax over
    choices. (AdapterHub's multiple-choice head fixes the number of choices in its config,
    which a run does not: its head is exported with `--no-head`, in jaxcult's format.)"""

    record_formats = ("multiple_choice",)
    uses_labels = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_multiple_choice(records, tokenizer, max_length, name)

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Items of `task.num_labels` choices (two, COPA's, when unset)."""
        tokens = jax.ShapeDtypeStruct((rows, self.num_labels or 2, length), jnp.int32)
        return {key: jax.ShapeDtypeStruct((rows,), jnp.int32) if key == "labels" else tokens
                for key in self.batch_keys}

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        return MultipleChoiceModel(backbone, pooling=self.settings.pooling, seed=inputs.seed,
                                   head=head_style(self.settings, backbone, True, inputs.source))
