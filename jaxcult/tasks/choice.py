"""Tasks with one categorical answer per example: (pair) classification and multiple choice."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.data.batching import Split, tokenize_classification, tokenize_multiple_choice
from jaxcult.errors import UserError
from jaxcult.models.classifier import MultipleChoiceModel, SequenceClassifier
from jaxcult.tasks.base import (
    Task,
    categorical,
    categorical_log_probs,
    encoder_forward,
    register_task,
)


def head_style(config: RunConfig, backbone: nnx.Module, multiple_choice: bool) -> str:
    """`task.head`: `jaxcult` (pooled dense + tanh + linear); `hf`: transformers' head of the
    architecture: BERT's (and every multiple-choice) head reads the pretrained pooler, RoBERTa /
    XLM-R's classification head is dense + tanh + linear on the first token."""
    if config.task.head == "jaxcult":
        return "jaxcult"
    if multiple_choice or backbone.config.model_type == "bert":
        if backbone.pooler is None:
            raise UserError(f"task.head: hf needs the pretrained pooler of {config.model.name!r}, "
                            f"whose checkpoint has none")
        return "pooler"
    return "jaxcult"


class _Categorical(Task):
    """Logits [batch, classes] (classes = labels, or the choices of a multiple-choice item)."""

    batch_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")

    def forward(self, model, batch, dropout_key):
        return encoder_forward(model, batch, dropout_key)

    def log_probs(self, outputs, batch):
        return categorical_log_probs(outputs, batch)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        logits, loss = categorical(outputs, batch)
        return loss, (logits.argmax(-1) == batch["labels"]).mean()


@register_task("classification")
class Classification(_Categorical):
    """A sentence (or sentence pair) -> one of the dataset's labels; pooled head."""

    record_formats = ("text_label",)

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_classification(records, tokenizer, max_length, name, self.num_labels)

    def build_model(self, backbone: nnx.Module, config: RunConfig) -> nnx.Module:
        return SequenceClassifier(backbone, self.num_labels, pooling=config.model.pooling,
                                  seed=config.trainer.seed,
                                  head=head_style(config, backbone, multiple_choice=False))


@register_task("pair_classification")
class PairClassification(Classification):
    """Classification of sentence pairs (PAWS-X, XNLI): the same model, its own name."""


@register_task("multiple_choice")
class MultipleChoice(_Categorical):
    """Each (context, choice) pair scored by the encoder + a one-logit head; softmax over choices."""

    record_formats = ("multiple_choice",)
    uses_labels = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_multiple_choice(records, tokenizer, max_length, name)

    def build_model(self, backbone: nnx.Module, config: RunConfig) -> nnx.Module:
        return MultipleChoiceModel(backbone, pooling=config.model.pooling, seed=config.trainer.seed,
                                   head=head_style(config, backbone, multiple_choice=True))
