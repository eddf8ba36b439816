"""Masked language modelling for encoders (BERT / XLM-R): what MAD-X language adapters train on.

Plain texts (`text` and `text_label` records) are masked once at tokenisation (`data.mlm`:
`mask_probability` 15%, 80/10/10, optionally `whole_word`s, seeded by `mask_seed`; `pack: true`
packs texts into full rows, see jaxcult.data.packing). The model is the encoder with its MLM
head (tied to the word embeddings), loaded from the checkpoint when it has one
(`cls.predictions.*` / `lm_head.*`: the tensors the backbone left, handed over by the builder),
else freshly initialised; the head is the `head` group and runs on the masked positions only.
Loss and evaluation: cross-entropy and perplexity over the masked positions. AdapterHub exports
hold the head (a MAD-X language adapter with its `masked_lm` head).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field

from jaxcult.data.batching import Split
from jaxcult.data.mlm import tokenize_masked
from jaxcult.errors import UserError
from jaxcult.hub.adapterhub import masked_lm_head
from jaxcult.models.mlm import MaskedLM, load_head
from jaxcult.tasks.base import (
    ExportedHead,
    ModelInputs,
    Task,
    register_task,
    token_log_probs,
    token_loss,
)
from jaxcult.tasks.causal_lm import PackedSettings

log = logging.getLogger(__name__)


class MaskedLMSettings(PackedSettings):
    mask_probability: float = Field(0.15, gt=0, lt=1, description="share of tokens masked")
    whole_word: bool = Field(False, description="mask every sub-token of a chosen word")
    mask_seed: int = Field(0, description="seed of the masks (each text's own, so batches are "
                           "the same however the split is read)")


@register_task("masked_lm")
class MaskedLMTask(Task):
    Settings = MaskedLMSettings
    record_formats = ("text", "text_label")
    batch_keys = ("input_ids", "attention_mask", "masked_positions", "labels", "loss_mask")
    sequence_keys = ("input_ids", "attention_mask")
    prediction_keys = ("masked_positions", "labels", "loss_mask")
    evaluator = "perplexity"
    uses_labels = False
    exported_adapters = "language"  # its bottleneck adapters form a MAD-X language adapter

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.settings.pack:  # packed rows carry document ids, and packing spans the split
            self.batch_keys = (*self.batch_keys, "segment_ids")
            self.sequence_keys = (*self.sequence_keys, "segment_ids")
            self.streamable = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        settings = self.settings
        return tokenize_masked([r["text"] for r in records], tokenizer, max_length, name,
                               probability=settings.mask_probability,
                               whole_word=settings.whole_word, seed=settings.mask_seed,
                               pack=settings.pack)

    def logit_positions(self, tokens: int) -> int:
        return int(tokens * self.settings.mask_probability)

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Predictions at the masking probability of the tokens, rounded up to 8 (the most
        the data pipeline pads them to)."""
        width = min(-(-int(length * self.settings.mask_probability) // 8) * 8 or 8, length)
        shapes = {key: jax.ShapeDtypeStruct((rows, length), jnp.int32) for key in self.sequence_keys}
        return {**shapes, **{key: jax.ShapeDtypeStruct((rows, width), jnp.int32)
                             for key in self.prediction_keys}}

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        model = MaskedLM(backbone, seed=inputs.seed)
        try:
            used = load_head(model.head, inputs.tensors)
        except ValueError as error:
            raise UserError(f"{inputs.source}: its MLM head does not fit ({error})") from None
        if not used:
            log.warning("masked_lm: %s has no MLM head; the head starts fresh", inputs.source)
        return model

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        """Logits at the masked positions only (the loss reads nothing else)."""
        return model(batch["input_ids"], batch["attention_mask"],
                     positions=batch["masked_positions"], segment_ids=batch.get("segment_ids"),
                     dropout_key=dropout_key)

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        return token_loss(outputs, batch)

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        return token_log_probs(outputs, batch)

    def head_formats(self) -> tuple[str, ...]:
        return ("adapterhub",)

    def export_head(self, model: nnx.Module, fmt: str, name: str) -> ExportedHead:
        return masked_lm_head(model, name)
