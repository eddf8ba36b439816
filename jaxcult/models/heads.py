"""Task heads on top of an encoder's hidden states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.models.encoder import mean_pool
from jaxcult.models.layers import Dense, dropout


class ClassificationHead(nnx.Module):
    """Pool -> dropout -> dense -> tanh -> dropout -> dense (AdapterHub's default head shape).

    `pooling` is `cls` (first token, BERT/XLM-R convention) or `mean` (E5/sentence-transformers).
    """

    def __init__(self, hidden_size: int, num_labels: int, *, pooling: str = "cls",
                 dropout_rate: float = 0.1, rngs: nnx.Rngs) -> None:
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', found {pooling!r}")
        self.dense = Dense(hidden_size, hidden_size, axes=("embed", None), rngs=rngs)
        self.out_proj = Dense(hidden_size, num_labels, axes=("embed", "classes"), rngs=rngs)
        self.pooling, self.dropout_rate = pooling, dropout_rate

    def __call__(self, hidden: jax.Array, attention_mask: jax.Array,
                 keys: tuple[jax.Array | None, jax.Array | None] = (None, None)) -> jax.Array:
        pooled = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)
        x = jnp.tanh(self.dense(dropout(pooled, self.dropout_rate, keys[0])))
        return self.out_proj(dropout(x, self.dropout_rate, keys[1]))


class PoolerHead(nnx.Module):
    """Dropout on the encoder's pooled output (its pretrained dense + tanh on the first token),
    then one linear layer: Hugging Face's BERT heads (`BertForSequenceClassification`,
    `*ForMultipleChoice`)."""

    def __init__(self, hidden_size: int, num_outputs: int, *, dropout_rate: float = 0.1,
                 rngs: nnx.Rngs) -> None:
        self.classifier = Dense(hidden_size, num_outputs, axes=("embed", "classes"), rngs=rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, pooled: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.classifier(dropout(pooled, self.dropout_rate, key))
