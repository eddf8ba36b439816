"""The Llama family (Llama 2/3, Qwen2, Mistral, SmolLM2) as one configurable causal LM.

Pre-RMSNorm blocks, SwiGLU, grouped-query attention, rotary embeddings (with `llama3` scaling),
optional q/k/v bias (Qwen2), tied or untied embeddings, and a functional KV cache: the cache is
a pytree passed in and returned, so prefill and decode steps are ordinary jitted calls.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxcult.models.layers import (
    Dense,
    Embed,
    KeySplitter,
    RMSNorm,
    attention,
    cached_attention,
    same_segment,
    segment_positions,
)
from jaxcult.sharding import constrain_batch
from jaxcult.truncation import call_layer

DECODER_TYPES = ("llama", "qwen2", "mistral")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a Llama-family causal LM (field names follow HF's config.json)."""

    vocab_size: int
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    attention_dropout: float = 0.0
    model_type: str = "llama"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> DecoderConfig:
        merged = {**hf, **overrides}
        if merged.get("model_type") == "qwen2" and "attention_bias" not in merged:
            merged["attention_bias"] = True  # Qwen2 always has q/k/v biases
        if "rope_theta" not in merged and isinstance(merged.get("rope_parameters"), dict):
            params = merged["rope_parameters"]
            merged["rope_theta"] = params.get("rope_theta", 10000.0)
            if params.get("rope_type", "default") != "default":
                merged["rope_scaling"] = params
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in merged.items() if k in names})


@struct.dataclass
class CausalLMOutput:
    """HF naming: `logits` [batch, len, vocab]; `cache` is the updated KV cache (or None)."""

    logits: jax.Array
    cache: Any = None
    hidden_states: jax.Array | None = None


@struct.dataclass
class KVCache:
    """Keys/values of each layer, [batch, kv_heads, max_len, head_dim] (one array per layer, so
    that writing a layer's new positions never copies the other layers' buffers); the fill
    length and the key mask."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    length: jax.Array  # scalar int32: number of positions already written
    mask: jax.Array    # [batch, max_len] 1 where a real (non-pad) token was written

    @classmethod
    def empty(cls, config: DecoderConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
        shape = (batch, config.num_key_value_heads, max_len, config.head_dim)
        layers = range(config.num_hidden_layers)
        return cls(tuple(jnp.zeros(shape, dtype) for _ in layers),
                   tuple(jnp.zeros(shape, dtype) for _ in layers), jnp.zeros((), jnp.int32),
                   jnp.zeros((batch, max_len), jnp.int32))


def rope_frequencies(config: DecoderConfig) -> jax.Array:
    """Inverse frequencies, with Llama 3's piecewise rescaling when configured."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind != "llama3":
        raise ValueError(f"unsupported rope_scaling type {kind!r} (supported: default, linear, llama3)")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF's rotate-half convention on [batch, len, heads, head_dim]."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class DecoderLayer(nnx.Module):
    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        pdt, dt = jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)
        h, hd = config.hidden_size, config.head_dim
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        qkv_bias = config.attention_bias
        self.input_layernorm = RMSNorm(h, eps=config.rms_norm_eps, **kw)
        self.q_proj = Dense(h, config.num_attention_heads * hd, axes=("embed", "heads"),
                            use_bias=qkv_bias, **kw)
        self.k_proj = Dense(h, config.num_key_value_heads * hd, axes=("embed", "kv_heads"),
                            use_bias=qkv_bias, **kw)
        self.v_proj = Dense(h, config.num_key_value_heads * hd, axes=("embed", "kv_heads"),
                            use_bias=qkv_bias, **kw)
        self.o_proj = Dense(config.num_attention_heads * hd, h, axes=("heads", "embed"),
                            use_bias=config.attention_bias and config.model_type != "qwen2", **kw)
        self.post_attention_layernorm = RMSNorm(h, eps=config.rms_norm_eps, **kw)
        self.gate_proj = Dense(h, config.intermediate_size, axes=("embed", "mlp"), use_bias=False, **kw)
        self.up_proj = Dense(h, config.intermediate_size, axes=("embed", "mlp"), use_bias=False, **kw)
        self.down_proj = Dense(config.intermediate_size, h, axes=("mlp", "embed"), use_bias=False, **kw)
        self.attention_adapter: nnx.Module | None = nnx.data(None)
        self.output_adapter: nnx.Module | None = nnx.data(None)
        self.config = config

    def __call__(self, x, positions, bias, inv_freq, keys: KeySplitter, layer_cache=None):
        c = self.config
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h, keys).reshape(b, t, c.num_attention_heads, c.head_dim)
        k = self.k_proj(h, keys).reshape(b, t, c.num_key_value_heads, c.head_dim)
        v = self.v_proj(h, keys).reshape(b, t, c.num_key_value_heads, c.head_dim)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if layer_cache is None:
            context = attention(q, k, v, bias)
        else:  # write this layer's new keys/values into its cache in place, attend over it
            cached_k, cached_v, start = layer_cache
            at = (0, 0, start, 0)
            k = jax.lax.dynamic_update_slice(cached_k, k.transpose(0, 2, 1, 3).astype(cached_k.dtype), at)
            v = jax.lax.dynamic_update_slice(cached_v, v.transpose(0, 2, 1, 3).astype(cached_v.dtype), at)
            context = cached_attention(q, k.astype(q.dtype), v.astype(q.dtype), bias)
        attended = self.o_proj(context.reshape(b, t, -1), keys)
        if self.attention_adapter is not None:  # pre-LN: no norm after the residual sum
            x = self.attention_adapter(attended, x, None, keys)
        else:
            x = x + attended
        h = self.post_attention_layernorm(x)
        mlp = self.down_proj(jax.nn.silu(self.gate_proj(h, keys)) * self.up_proj(h, keys), keys)
        if self.output_adapter is not None:
            return self.output_adapter(mlp, x, None, keys), (k, v)
        return x + mlp, (k, v)


class CausalLM(nnx.Module):
    """Decoder-only LM returning `CausalLMOutput(logits=...)`."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        if config.model_type not in DECODER_TYPES:
            raise ValueError(f"unsupported decoder model_type {config.model_type!r}")
        pdt, dt = jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        self.config = config
        self.embed_tokens = Embed(config.vocab_size, config.hidden_size, **kw)
        self.layers = nnx.List([DecoderLayer(config, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, **kw)
        self.lm_head = (None if config.tie_word_embeddings else
                        Dense(config.hidden_size, config.vocab_size, axes=("embed", "vocab"),
                              use_bias=False, **kw))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None, *, cache: KVCache | None = None,
                 dropout_key: jax.Array | None = None, return_hidden: bool = False,
                 last_only: bool | int = False,
                 segment_ids: jax.Array | None = None) -> CausalLMOutput:
        """`segment_ids` (packed training rows, no cache: document id per token, 0 for
        padding) keep documents from attending to each other and restart positions."""
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if segment_ids is not None and cache is not None:
            raise ValueError("packed rows (segment_ids) are for training and scoring, not with "
                             "a KV cache")
        start = cache.length if cache is not None else jnp.zeros((), jnp.int32)
        if position_ids is None:
            position_ids = (segment_positions(segment_ids) if segment_ids is not None
                            else jnp.broadcast_to(start + jnp.arange(t), (b, t)))
        if cache is not None:
            key_mask = jax.lax.dynamic_update_slice_in_dim(
                cache.mask, attention_mask.astype(cache.mask.dtype), start, axis=1)
            k_len = cache.keys[0].shape[2]
        else:
            key_mask, k_len = attention_mask, t
        q_pos = start + jnp.arange(t)
        causal = q_pos[:, None] >= jnp.arange(k_len)[None, :]
        allowed = causal[None, None] & key_mask[:, None, None, :].astype(bool)
        if segment_ids is not None:
            allowed = allowed & same_segment(segment_ids)
        bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)
        inv_freq = rope_frequencies(self.config)
        keys = KeySplitter(dropout_key)
        x = constrain_batch(self.embed_tokens(input_ids))
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = (cache.keys[i], cache.values[i], start) if cache is not None else None
            x, (k, v) = call_layer(
                layer, i, x, keys,
                lambda m, h, k, c=layer_cache: m(h, position_ids, bias, inv_freq, k, c))
            new_keys.append(k)
            new_values.append(v)
            x = constrain_batch(x)
        hidden = self.norm(x)
        # prefill: only the next token's logits (True); scoring: the last N positions' (N)
        head_input = hidden[:, -int(last_only):] if last_only else hidden
        logits = (self.embed_tokens.attend(head_input) if self.lm_head is None
                  else self.lm_head(head_input))
        new_cache = None
        if cache is not None:
            new_cache = KVCache(tuple(new_keys), tuple(new_values), start + t, key_mask)
        return CausalLMOutput(logits=logits, cache=new_cache,
                              hidden_states=hidden if return_hidden else None)
