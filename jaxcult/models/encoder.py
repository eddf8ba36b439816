"""BERT / RoBERTa / XLM-R encoders (post-LN), numerically matching Hugging Face's PyTorch models.

Adapters attach through two hooks per layer, `attention_adapter` and `output_adapter`: each
replaces the layer's "add residual, then LayerNorm" step (AdapterHub's bottleneck placement), so
the backbone code knows nothing about PEFT.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxcult.models.layer_stack import run_layers
from jaxcult.models.layers import (
    Dense,
    Embed,
    KeySplitter,
    LayerNorm,
    activation,
    attention,
    dropout,
    padding_bias,
    segment_bias,
    segment_positions,
)
from jaxcult.sharding import constrain_batch

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder (field names follow HF's config.json)."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    model_type: str = "bert"
    add_pooler: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def position_offset(self) -> int:
        """RoBERTa-family positions start after the padding index."""
        return self.pad_token_id + 1 if self.model_type in ("roberta", "xlm-roberta") else 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> EncoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**hf, **overrides}.items() if k in names})


@struct.dataclass
class EncoderOutput:
    """HF naming: `last_hidden_state` [batch, len, hidden], `pooler_output` [batch, hidden]."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None  # embeddings, then every layer's output


def _dtypes(config) -> tuple[Any, Any]:
    return jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)


class EncoderEmbeddings(nnx.Module):
    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs) -> None:
        pdt, dt = _dtypes(config)
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        self.word_embeddings = Embed(config.vocab_size, config.hidden_size, **kw)
        self.position_embeddings = Embed(config.max_position_embeddings, config.hidden_size,
                                         axes=("positions", "embed"), **kw)
        self.token_type_embeddings = Embed(config.type_vocab_size, config.hidden_size,
                                           axes=("types", "embed"), **kw)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **kw)
        self.config = config

    def __call__(self, input_ids, token_type_ids, position_ids, keys: KeySplitter) -> jax.Array:
        x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
             + self.token_type_embeddings(token_type_ids))
        return dropout(self.layer_norm(x), self.config.hidden_dropout_prob, keys.next())


class EncoderLayer(nnx.Module):
    """Self-attention + FFN, each followed by residual and LayerNorm (post-LN)."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs) -> None:
        pdt, dt = _dtypes(config)
        h, ff = config.hidden_size, config.intermediate_size
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        self.query = Dense(h, h, axes=("embed", "heads"), **kw)
        self.key = Dense(h, h, axes=("embed", "heads"), **kw)
        self.value = Dense(h, h, axes=("embed", "heads"), **kw)
        self.attention_output = Dense(h, h, axes=("heads", "embed"), **kw)
        self.attention_norm = LayerNorm(h, eps=config.layer_norm_eps, **kw)
        self.intermediate = Dense(h, ff, axes=("embed", "mlp"), **kw)
        self.output = Dense(ff, h, axes=("mlp", "embed"), **kw)
        self.output_norm = LayerNorm(h, eps=config.layer_norm_eps, **kw)
        self.attention_adapter: nnx.Module | None = nnx.data(None)
        self.output_adapter: nnx.Module | None = nnx.data(None)
        self.config = config
        self.act = activation(config.hidden_act)

    @staticmethod
    def _residual(adapter, hidden, residual, norm, keys: KeySplitter) -> jax.Array:
        if adapter is None:
            return norm(hidden + residual)
        return adapter(hidden, residual, norm, keys)

    def __call__(self, x: jax.Array, bias: jax.Array, keys: KeySplitter) -> jax.Array:
        c = self.config
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, c.num_attention_heads, c.head_dim)  # noqa: E731
        q, k, v = split(self.query(x, keys)), split(self.key(x, keys)), split(self.value(x, keys))
        context = attention(q, k, v, bias, dropout_rate=c.attention_probs_dropout_prob,
                            dropout_key=keys.next())
        hidden = self.attention_output(context.reshape(b, t, c.hidden_size), keys)
        hidden = dropout(hidden, c.hidden_dropout_prob, keys.next())
        x = self._residual(self.attention_adapter, hidden, x, self.attention_norm, keys)
        hidden = self.output(self.act(self.intermediate(x, keys)), keys)
        hidden = dropout(hidden, c.hidden_dropout_prob, keys.next())
        return self._residual(self.output_adapter, hidden, x, self.output_norm, keys)


class Encoder(nnx.Module):
    """The full encoder: embeddings, `num_hidden_layers` layers, optional tanh pooler."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs) -> None:
        if config.model_type not in ENCODER_TYPES:
            raise ValueError(f"unsupported encoder model_type {config.model_type!r}")
        pdt, dt = _dtypes(config)
        self.config = config
        self.embeddings = EncoderEmbeddings(config, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(config, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])
        self.embedding_adapter: nnx.Module | None = nnx.data(None)
        self.pooler = (Dense(config.hidden_size, config.hidden_size, axes=("embed", None),
                             param_dtype=pdt, dtype=dt, rngs=rngs) if config.add_pooler else None)

    def default_positions(self, input_ids: jax.Array) -> jax.Array:
        """BERT: 0..T-1. RoBERTa family: cumulative count of non-pad tokens + pad index."""
        c = self.config
        if c.position_offset == 0:
            return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        not_pad = (input_ids != c.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=1) * not_pad + c.pad_token_id

    def packed_positions(self, segment_ids: jax.Array) -> jax.Array:
        """Positions of packed rows: each document numbered as if it were alone in its row."""
        within = segment_positions(segment_ids)
        if self.config.position_offset == 0:
            return within
        pad = self.config.pad_token_id
        return jnp.where(segment_ids != 0, within + pad + 1, pad)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
                 *, segment_ids: jax.Array | None = None,
                 dropout_key: jax.Array | None = None) -> EncoderOutput:
        """`segment_ids` (packed rows: document id per token, 0 for padding) keep documents
        from attending to each other and restart positions per document."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if segment_ids is not None and position_ids is None:
            position_ids = self.packed_positions(segment_ids)
        keys = KeySplitter(dropout_key)
        x = self.embed(input_ids, token_type_ids, position_ids, keys)
        return self.encode(x, attention_mask, keys, segment_ids=segment_ids)

    def embed(self, input_ids: jax.Array, token_type_ids: jax.Array | None = None,
              position_ids: jax.Array | None = None, keys: KeySplitter | None = None) -> jax.Array:
        """Token embeddings [batch, len, hidden] (after the MAD-X embedding adapter, if any)."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = self.default_positions(input_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids, keys or KeySplitter(None))
        if self.embedding_adapter is not None:  # MAD-X invertible language adapter
            x = self.embedding_adapter(x)
        return x

    def encode(self, x: jax.Array, attention_mask: jax.Array, keys: KeySplitter | None = None,
               hidden_states: bool = False, segment_ids: jax.Array | None = None) -> EncoderOutput:
        """The layers (and pooler) over embedded inputs: text, or text joined with other
        modalities' tokens (vision-language models); `hidden_states` keeps every layer's
        output (probes)."""
        keys = keys or KeySplitter(None)
        x = constrain_batch(x)
        bias = padding_bias(attention_mask) if segment_ids is None else segment_bias(segment_ids)
        embedded = x
        x, kept = run_layers(self.layers, x, keys, lambda m, h, k: m(h, bias, k), keep=hidden_states)
        pooled = jnp.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=x, pooler_output=pooled,
                             hidden_states=(embedded, *kept) if hidden_states else None)


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Average of the non-padding token states (sentence-transformers / E5 pooling)."""
    mask = attention_mask[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
