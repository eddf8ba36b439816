"""Decoder-only LMs as one configurable causal LM: Llama 2/3, Qwen2/3, Mistral, SmolLM2,
Gemma 2/3, Cohere (Command-R, Aya Expanse), Phi-3.

Pre-norm blocks (RMSNorm, Gemma's offset RMSNorm or bias-free LayerNorm; Gemma's extra norms on
the attention and MLP outputs; Cohere's parallel block), gated MLPs, grouped-query attention
with optional per-head QK-norm, logit soft-capping and sliding windows per layer, rotary
embeddings per layer (halves or interleaved pairs, partial, `linear` / `llama3` scaling), tied
or untied embeddings, and a functional KV cache: the cache is a pytree passed in and returned,
so prefill and decode steps are ordinary jitted calls. What varies is the family's config
(`jaxcult.models.decoder_config.DecoderConfig` and its subclasses).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.layer_stack import run_layers
from jaxcult.models.layers import (
    Dense,
    Embed,
    KeySplitter,
    LayerNorm,
    OffsetRMSNorm,
    RMSNorm,
    activation,
    attention,
    cached_attention,
    same_segment,
    segment_positions,
)
from jaxcult.sharding import constrain_batch
from jaxcult.truncation import call_layer

DECODER_TYPES = ("llama", "qwen2", "mistral")


def make_norm(kind: str, features: int, config: DecoderConfig, rngs: nnx.Rngs) -> nnx.Module:
    """A norm of the family's kind over `features`."""
    kw = dict(eps=config.rms_norm_eps, param_dtype=jnp.dtype(config.param_dtype),
              dtype=jnp.dtype(config.dtype), rngs=rngs)
    if kind == "offset_rms":
        return OffsetRMSNorm(features, **kw)
    if kind == "layer":
        return LayerNorm(features, use_bias=False, **kw)
    return RMSNorm(features, **kw)


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


def rope_frequencies(dim: int, theta: float, scaling: dict | None) -> jax.Array:
    """Inverse frequencies of `dim` rotated dimensions, with `linear` or Llama 3's piecewise
    rescaling when configured."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    scaling = scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array,
               interleaved: bool = False) -> jax.Array:
    """Rotary embedding of the first `2 * len(inv_freq)` dimensions of [batch, len, heads,
    head_dim] (the rest pass through: partial rotary). HF's rotate-half convention, or with
    `interleaved` Cohere's, which rotates the pairs (x0, x1), (x2, x3), ..."""
    rotated_dims = 2 * inv_freq.shape[0]
    x, rest = x[..., :rotated_dims], x[..., rotated_dims:]
    freqs = positions[..., None].astype(jnp.float32) * inv_freq
    if interleaved:
        emb = jnp.repeat(freqs, 2, axis=-1)[:, :, None, :]
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
        cos, sin = jnp.cos(emb), jnp.sin(emb)   # Cohere rotates in float32
        out = (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)
    else:
        emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
        cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
        half = x.shape[-1] // 2
        rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        out = x * cos + rotated * sin
    return jnp.concatenate([out, rest], axis=-1) if rest.shape[-1] else out


class DecoderLayer(nnx.Module):
    """One block. Sequential (Llama): x + attn(norm(x)), then + mlp(norm(x)); Gemma adds a
    norm on each output (`attention_out_norm`, `mlp_out_norm`); Cohere's parallel block adds
    attn(norm(x)) and mlp(norm(x)) of the same input. PEFT hooks (`attention_adapter`,
    `output_adapter`) receive each output and the residual it is added to."""

    def __init__(self, config: DecoderConfig, index: int, *, rngs: nnx.Rngs) -> None:
        pdt, dt = jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)
        h, hd = config.hidden_size, config.head_dim
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        qkv_bias = config.attention_bias
        self.input_layernorm = make_norm(config.norm, h, config, rngs)
        if config.fused_projections:
            self.qkv_proj = Dense(h, (heads + 2 * kv) * hd, axes=("embed", "heads"),
                                  use_bias=qkv_bias, **kw)
        else:
            self.q_proj = Dense(h, heads * hd, axes=("embed", "heads"), use_bias=qkv_bias, **kw)
            self.k_proj = Dense(h, kv * hd, axes=("embed", "kv_heads"), use_bias=qkv_bias, **kw)
            self.v_proj = Dense(h, kv * hd, axes=("embed", "kv_heads"), use_bias=qkv_bias, **kw)
        if config.qk_norm == "layer":  # Cohere: one scale per head and dimension
            self.q_norm = LayerNorm((heads, hd), eps=config.rms_norm_eps, use_bias=False,
                                    axes=("heads", "head_dim"), **kw)
            self.k_norm = LayerNorm((kv, hd), eps=config.rms_norm_eps, use_bias=False,
                                    axes=("kv_heads", "head_dim"), **kw)
        elif config.qk_norm is not None:
            self.q_norm = make_norm(config.qk_norm, hd, config, rngs)
            self.k_norm = make_norm(config.qk_norm, hd, config, rngs)
        self.o_proj = Dense(heads * hd, h, axes=("heads", "embed"),
                            use_bias=config.attention_bias and config.model_type != "qwen2", **kw)
        if not config.parallel_block:
            self.post_attention_layernorm = make_norm(config.norm, h, config, rngs)
        if config.sandwich_norms:
            self.attention_out_norm = make_norm(config.norm, h, config, rngs)
            self.mlp_out_norm = make_norm(config.norm, h, config, rngs)
        inter = config.intermediate_size
        if config.fused_projections:
            self.gate_up_proj = Dense(h, 2 * inter, axes=("embed", "mlp"), use_bias=False, **kw)
        else:
            self.gate_proj = Dense(h, inter, axes=("embed", "mlp"), use_bias=False, **kw)
            self.up_proj = Dense(h, inter, axes=("embed", "mlp"), use_bias=False, **kw)
        self.down_proj = Dense(inter, h, axes=("mlp", "embed"), use_bias=False, **kw)
        self.attention_adapter: nnx.Module | None = nnx.data(None)
        self.output_adapter: nnx.Module | None = nnx.data(None)
        self.config, self.act = config, activation(config.hidden_act)
        # what varies per layer, as settings (not the index): equal layers can share a scan body
        self.window, self.rope_key = config.window(index), rope_key(config, index)

    def _qkv(self, h: jax.Array, keys: KeySplitter) -> tuple[jax.Array, jax.Array, jax.Array]:
        c = self.config
        b, t, _ = h.shape
        heads, kv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        if c.fused_projections:
            qkv = self.qkv_proj(h, keys)
            q, k, v = jnp.split(qkv, [heads * hd, (heads + kv) * hd], axis=-1)
        else:
            q, k, v = self.q_proj(h, keys), self.k_proj(h, keys), self.v_proj(h, keys)
        q, k, v = (q.reshape(b, t, heads, hd), k.reshape(b, t, kv, hd), v.reshape(b, t, kv, hd))
        if c.qk_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def _mlp(self, h: jax.Array, keys: KeySplitter) -> jax.Array:
        if self.config.fused_projections:
            gate, up = jnp.split(self.gate_up_proj(h, keys), 2, axis=-1)
        else:
            gate, up = self.gate_proj(h, keys), self.up_proj(h, keys)
        return self.down_proj(self.act(gate) * up, keys)

    def _attend(self, h, positions, bias, inv_freq, keys, layer_cache):
        c = self.config
        q, k, v = self._qkv(h, keys)
        q = apply_rope(q, positions, inv_freq, c.rope_interleaved)
        k = apply_rope(k, positions, inv_freq, c.rope_interleaved)
        extras = dict(scale=c.query_scale, softcap=c.attention_softcap)
        if layer_cache is None:
            context = attention(q, k, v, bias, **extras)
        else:  # write this layer's new keys/values into its cache in place, attend over it
            cached_k, cached_v, start = layer_cache
            at = (0, 0, start, 0)
            k = jax.lax.dynamic_update_slice(cached_k, k.transpose(0, 2, 1, 3).astype(cached_k.dtype), at)
            v = jax.lax.dynamic_update_slice(cached_v, v.transpose(0, 2, 1, 3).astype(cached_v.dtype), at)
            context = cached_attention(q, k.astype(q.dtype), v.astype(q.dtype), bias, **extras)
        b, t = h.shape[:2]
        return self.o_proj(context.reshape(b, t, -1), keys), (k, v)

    def _add(self, adapter, out: jax.Array, residual: jax.Array, keys) -> jax.Array:
        """residual + out, through a PEFT hook when one is attached (pre-LN: no norm after)."""
        return residual + out if adapter is None else adapter(out, residual, None, keys)

    def __call__(self, x, positions, biases: dict, inv_freqs: dict, keys: KeySplitter,
                 layer_cache=None):
        c = self.config
        bias, inv_freq = biases[self.window], inv_freqs[self.rope_key]
        h = self.input_layernorm(x)
        attended, kv = self._attend(h, positions, bias, inv_freq, keys, layer_cache)
        if c.parallel_block:
            x = self._add(self.attention_adapter, attended, x, keys)
            return self._add(self.output_adapter, self._mlp(h, keys), x, keys), kv
        if c.sandwich_norms:
            attended = self.attention_out_norm(attended)
        x = self._add(self.attention_adapter, attended, x, keys)
        mlp = self._mlp(self.post_attention_layernorm(x), keys)
        if c.sandwich_norms:
            mlp = self.mlp_out_norm(mlp)
        return self._add(self.output_adapter, mlp, x, keys), kv


def rope_key(config: DecoderConfig, layer: int) -> tuple:
    """A hashable key of `layer`'s rotary settings (layers that share it share frequencies)."""
    theta, scaling = config.rope(layer)
    return theta, tuple(sorted((scaling or {}).items(), key=str))


def attention_bias(allowed: jax.Array) -> jax.Array:
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)


class CausalLM(nnx.Module):
    """Decoder-only LM returning `CausalLMOutput(logits=...)`."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        pdt, dt = jnp.dtype(config.param_dtype), jnp.dtype(config.dtype)
        kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
        self.config = config
        self.embed_tokens = Embed(config.vocab_size, config.hidden_size, **kw)
        self.layers = nnx.List([DecoderLayer(config, i, rngs=rngs)
                                for i in range(config.num_hidden_layers)])
        self.norm = make_norm(config.norm, config.hidden_size, config, rngs)
        self.lm_head = (None if config.tie_word_embeddings else
                        Dense(config.hidden_size, config.vocab_size, axes=("embed", "vocab"),
                              use_bias=False, **kw))

    def _biases(self, allowed: jax.Array, q_pos: jax.Array, k_len: int) -> dict:
        """Additive attention bias for full layers (None) and for each sliding window."""
        biases = {None: attention_bias(allowed)}
        for window in {self.config.window(i) for i in range(self.config.num_hidden_layers)}:
            if window is not None:
                near = q_pos[:, None] - jnp.arange(k_len)[None, :] < window
                biases[window] = attention_bias(allowed & near[None, None])
        return biases

    def _cached_layers(self, x, cache: KVCache, start, position_ids, biases, inv_freqs, keys):
        """The layers one by one (a stacked model's as slices), each writing its cache."""
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            x, (k, v) = call_layer(
                layer, i, x, keys,
                lambda m, h, k, c=(cache.keys[i], cache.values[i], start):
                    m(h, position_ids, biases, inv_freqs, k, c))
            new_keys.append(k)
            new_values.append(v)
            x = constrain_batch(x)
        return x, (tuple(new_keys), tuple(new_values))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None, *, cache: KVCache | None = None,
                 dropout_key: jax.Array | None = None, return_hidden: bool = False,
                 last_only: bool | int = False,
                 segment_ids: jax.Array | None = None) -> CausalLMOutput:
        """`segment_ids` (packed training rows, no cache: document id per token, 0 for
        padding) keep documents from attending to each other and restart positions. Sliding
        windows count cache slots, as transformers' cache positions do."""
        config = self.config
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
        biases = self._biases(allowed, q_pos, k_len)
        inv_freqs = {}
        for i in range(config.num_hidden_layers):
            if rope_key(config, i) not in inv_freqs:
                inv_freqs[rope_key(config, i)] = rope_frequencies(config.rotary_dim, *config.rope(i))
        keys = KeySplitter(dropout_key)
        x = self.embed_tokens(input_ids)
        scale = config.embedding_scale(jnp.dtype(config.param_dtype))  # rounded as HF does
        x = constrain_batch(x if scale is None else x * scale.astype(x.dtype))
        if cache is None:
            x, _ = run_layers(self.layers, x, keys,
                              lambda m, h, k: m(h, position_ids, biases, inv_freqs, k)[0])
            new_cache = None
        else:
            x, (new_keys, new_values) = self._cached_layers(x, cache, start, position_ids, biases,
                                                            inv_freqs, keys)
            new_cache = KVCache(new_keys, new_values, start + t, key_mask)
        hidden = self.norm(x)
        # prefill: only the next token's logits (True); scoring: the last N positions' (N)
        head_input = hidden[:, -int(last_only):] if last_only else hidden
        logits = config.output_logits(self.embed_tokens.attend(head_input) if self.lm_head is None
                                      else self.lm_head(head_input))
        return CausalLMOutput(logits=logits, cache=new_cache,
                              hidden_states=hidden if return_hidden else None)
