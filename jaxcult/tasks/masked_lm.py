"""Masked language modelling for encoders (BERT / XLM-R): what MAD-X language adapters train on.

Plain texts (`text` and `text_label` records) are masked once at tokenisation (`data.mlm`:
15%, 80/10/10, optionally whole words; `task.options`: `mask_probability`, `whole_word`,
`mask_seed`; `pack: true` packs texts into full rows, see jaxcult.data.packing). The model is
the encoder with its MLM head (tied to the word embeddings), loaded from the checkpoint when it
has one (`cls.predictions.*` / `lm_head.*`), else freshly initialised; the head is the `head`
group and runs on the masked positions only. Loss and evaluation: cross-entropy and
perplexity over the masked positions.
"""

from __future__ import annotations

import sys

import jax
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.data.batching import Split
from jaxcult.data.mlm import tokenize_masked
from jaxcult.errors import UserError
from jaxcult.models.mlm import MaskedLM, load_head
from jaxcult.tasks.base import Task, register_task, token_log_probs, token_loss


@register_task("masked_lm")
class MaskedLMTask(Task):
    record_formats = ("text", "text_label")
    batch_keys = ("input_ids", "attention_mask", "masked_positions", "labels", "loss_mask")
    sequence_keys = ("input_ids", "attention_mask")
    prediction_keys = ("masked_positions", "labels", "loss_mask")
    evaluator = "perplexity"
    uses_labels = False
    option_names = ("mask_probability", "whole_word", "mask_seed", "pack")

    def __init__(self, config, labels=()) -> None:
        super().__init__(config, labels)
        options = config.options
        self.probability = float(options.get("mask_probability", 0.15))
        if not 0 < self.probability < 1:
            raise UserError(f"task.options.mask_probability: expected a share in (0, 1), found "
                            f"{self.probability}")
        self.whole_word = bool(options.get("whole_word", False))
        self.seed = int(options.get("mask_seed", 0))
        self.pack = bool(options.get("pack", False))
        if self.pack:  # packed rows carry document ids, and packing spans the split
            self.batch_keys = (*self.batch_keys, "segment_ids")
            self.sequence_keys = (*self.sequence_keys, "segment_ids")
            self.streamable = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        return tokenize_masked([r["text"] for r in records], tokenizer, max_length, name,
                               probability=self.probability, whole_word=self.whole_word,
                               seed=self.seed, pack=self.pack)

    def build_model(self, backbone: nnx.Module, config: RunConfig) -> nnx.Module:
        from jaxcult.hub.pretrained import checkpoint_tensors

        model = MaskedLM(backbone, seed=config.trainer.seed)
        tensors = checkpoint_tensors(config.model.name) if config.model.name != "random" else {}
        try:
            used = load_head(model.head, tensors)
        except ValueError as error:
            raise UserError(f"{config.model.name}: its MLM head does not fit ({error})") from None
        if not used:
            print(f"masked_lm: {config.model.name} has no MLM head; the head starts fresh",
                  file=sys.stderr)
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
