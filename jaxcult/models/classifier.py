"""Encoder + classification head: the model of (pair) classification tasks."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcult.models.encoder import Encoder
from jaxcult.models.heads import ClassificationHead, PoolerHead
from jaxcult.models.layers import Dense, dropout


def make_head(encoder: Encoder, outputs: int, pooling: str, style: str, dropout_rate: float,
              seed: int) -> nnx.Module:
    """`jaxcult`: pool, dense + tanh, linear (AdapterHub's head; RoBERTa's classification head
    with cls pooling); `pooler`: the encoder's pretrained pooler, then a linear layer (BERT's)."""
    rngs = nnx.Rngs(seed)
    if style == "pooler":
        if encoder.pooler is None:
            raise ValueError("the encoder has no pooler (its checkpoint ships none)")
        return PoolerHead(encoder.config.hidden_size, outputs, dropout_rate=dropout_rate, rngs=rngs)
    return ClassificationHead(encoder.config.hidden_size, outputs, pooling=pooling,
                              dropout_rate=dropout_rate, rngs=rngs)


def _apply_head(head: nnx.Module, out, attention_mask, keys) -> jax.Array:
    if isinstance(head, PoolerHead):
        return head(out.pooler_output, keys[0])
    return head(out.last_hidden_state, attention_mask, keys)


class SequenceClassifier(nnx.Module):
    """Logits [batch, num_labels] from token ids; dropout only when `dropout_key` is given."""

    def __init__(self, encoder: Encoder, num_labels: int, *, pooling: str = "cls",
                 dropout_rate: float = 0.1, seed: int = 0, head: str = "jaxcult") -> None:
        self.encoder = encoder
        self.head = make_head(encoder, num_labels, pooling, head, dropout_rate, seed)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        keys = (None, None, None) if dropout_key is None else tuple(jax.random.split(dropout_key, 3))
        out = self.encoder(input_ids, attention_mask, token_type_ids, dropout_key=keys[0])
        return _apply_head(self.head, out, attention_mask, keys[1:])


class MultipleChoiceModel(nnx.Module):
    """Scores each (context, choice) sequence; inputs [batch, choices, len] -> logits [batch, choices]."""

    def __init__(self, encoder: Encoder, *, pooling: str = "cls", dropout_rate: float = 0.1,
                 seed: int = 0, head: str = "jaxcult") -> None:
        self.encoder = encoder
        self.head = make_head(encoder, 1, pooling, head, dropout_rate, seed)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        batch, choices, length = input_ids.shape
        flat = lambda x: None if x is None else x.reshape(batch * choices, length)  # noqa: E731
        keys = (None, None, None) if dropout_key is None else tuple(jax.random.split(dropout_key, 3))
        out = self.encoder(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                           dropout_key=keys[0])
        return _apply_head(self.head, out, flat(attention_mask), keys[1:]).reshape(batch, choices)


class SpanHead(nnx.Module):
    """One linear layer scoring every token as answer start and end (BERT's `qa_outputs`)."""

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs) -> None:
        self.qa_outputs = Dense(hidden_size, 2, axes=("embed", "classes"), rngs=rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return self.qa_outputs(hidden).transpose(0, 2, 1)  # [batch, 2 (start, end), len]


class SpanExtractor(nnx.Module):
    """Extractive QA: start and end logits [batch, 2, len] over the tokens of each window."""

    def __init__(self, encoder: Encoder, *, dropout_rate: float = 0.0, seed: int = 0) -> None:
        self.encoder = encoder
        self.head = SpanHead(encoder.config.hidden_size, rngs=nnx.Rngs(seed))
        self.dropout_rate = dropout_rate

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        keys = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
        hidden = self.encoder(input_ids, attention_mask, token_type_ids,
                              dropout_key=keys[0]).last_hidden_state
        return self.head(dropout(hidden, self.dropout_rate, keys[1]))
