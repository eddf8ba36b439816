"""Causal language modelling: next-token prediction on the positions `loss_mask` selects.

Batches hold `labels` [batch, len] = the next token of each position and `loss_mask` = 1 where
that prediction is trained (real text; for chat records only assistant turns). It reads plain
text (`text` and `text_label` records: their `text`) and `chat` records; the model is the causal LM
itself (its `lm_head` is the `head` group under full fine-tuning). `pack: true`
packs the texts or conversations into full rows (jaxcult.data.packing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field

from jaxcult.config import TaskConfig
from jaxcult.data import lm
from jaxcult.data.batching import Split, pad_token_id
from jaxcult.data.packing import pack_rows
from jaxcult.tasks.base import ModelInputs, Task, register_task, token_log_probs, token_loss


class PackedSettings(TaskConfig):
    pack: bool = Field(False, description="pack texts (or conversations) into full rows, each "
                       "attending only to itself (jaxcult.data.packing)")


@register_task("causal_lm")
class CausalLM(Task):
    Settings = PackedSettings
    record_formats = ("text_label", "text", "chat")
    batch_keys = ("input_ids", "attention_mask", "labels", "loss_mask")
    backbone = "decoder"
    evaluator = "perplexity"
    uses_labels = False
    adds_head = False  # the causal LM is its own model (its lm_head is the backbone's)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pack = self.settings.pack
        if self.pack:  # packed rows carry document ids, and packing spans the split
            self.batch_keys = (*self.batch_keys, "segment_ids")
            self.streamable = False

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        if records and "messages" in records[0]:
            split = lm.tokenize_chats(records, tokenizer, max_length, name)
        else:
            split = lm.tokenize_texts([r["text"] for r in records], tokenizer, max_length, name)
        if self.pack:
            split = Split(pack_rows(split.arrays, max_length, pad_token_id(tokenizer)), name)
        return split

    def build_model(self, backbone: nnx.Module, inputs: ModelInputs) -> nnx.Module:
        return backbone

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {key: jax.ShapeDtypeStruct((rows, length), jnp.int32) for key in self.batch_keys}

    def forward(self, model, batch: dict, dropout_key: jax.Array | None) -> jax.Array:
        return model(batch["input_ids"], batch["attention_mask"], dropout_key=dropout_key,
                     segment_ids=batch.get("segment_ids")).logits

    def loss(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        return token_loss(outputs, batch)

    def log_probs(self, outputs: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
        return token_log_probs(outputs, batch)
