"""Sentence embeddings from jaxcult's own encoders, and cosine retrieval over them.

An embedding is the mean of the last layer's token states over the non-padding tokens, as
sentence-transformers' mean pooling computes it (all-MiniLM-L6-v2, stsb-xlm-r-multilingual,
E5), then L2-normalised when `normalize` (all-MiniLM-L6-v2's Normalize module; cosine
similarity does not depend on it). `prefix` is prepended to every text (E5 expects "query: ").
Texts are cut at `max_length` tokens, batched after sorting by length and padded to the next
power of two (a few compiled programs for any number of texts).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.models.encoder import mean_pool


@partial(jax.jit, static_argnums=(0,))
def _pooled(graphdef, state, ids, mask):
    model = nnx.merge(graphdef, state)
    hidden = model(ids, mask).last_hidden_state.astype(jnp.float32)
    return mean_pool(hidden, mask)


class SentenceEncoder:
    """`encode(texts)` -> [n, hidden] float32 embeddings from an encoder and its tokenizer."""

    def __init__(self, model, tokenizer, *, batch_size: int = 32, max_length: int = 256,
                 prefix: str = "", normalize: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.prefix, self.normalize = prefix, normalize

    @classmethod
    def load(cls, source: str, **settings) -> SentenceEncoder:
        """An encoder by asset name, HF directory or Hub id."""
        from jaxcult.hub.pretrained import load_pretrained

        return cls(*load_pretrained(source), **settings)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encoded = [self.tokenizer(self.prefix + text, truncation=True,
                                  max_length=self.max_length)["input_ids"] for text in texts]
        graphdef, state = nnx.split(self.model)
        pad = self.tokenizer.pad_token_id or 0
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            length = 1 << max(max(len(encoded[i]) for i in batch) - 1, 0).bit_length()
            ids = np.full((self.batch_size, length), pad, np.int32)
            mask = np.zeros((self.batch_size, length), np.int32)
            for row, index in enumerate(batch):
                ids[row, :len(encoded[index])] = encoded[index]
                mask[row, :len(encoded[index])] = 1
            pooled = np.asarray(_pooled(graphdef, state, jnp.asarray(ids), jnp.asarray(mask)))
            found.update((index, pooled[row]) for row, index in enumerate(batch))
        vectors = np.stack([found[i] for i in range(len(texts))]) if texts else np.zeros((0, 0))
        if self.normalize and len(texts):
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] cosine similarities (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> list[list[int]]:
    """Per query, the indices of its k most similar corpus rows, most similar first (ties, to
    12 decimals, the lower index first)."""
    similarity = np.round(cosine_matrix(queries, corpus), 12)
    return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in similarity]
