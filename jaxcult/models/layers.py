"""Building blocks whose parameters all carry logical axis names.

Each `nnx.Param` gets an `axes` metadata tuple (one logical name per dimension, e.g.
`("embed", "mlp")`); `jaxcult.sharding` maps those names to mesh axes through the rule table in
the config, so model code never mentions devices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.models.dropout_mask import keep_mask
from jaxcult.models.gelu import gelu
from jaxcult.models.products import matmul
from jaxcult.models.quantized import QuantizedKernel
from jaxcult.sharding import Axes


def param(rngs: nnx.Rngs, init: Callable, shape: tuple[int, ...], dtype, axes: Axes) -> nnx.Param:
    """A parameter initialised with `init` and annotated with logical `axes`."""
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes} do not match shape {shape}")
    return nnx.Param(init(rngs.params(), shape, dtype), axes=axes)


class Dense(nnx.Module):
    """y = x @ kernel + bias with kernel stored (in, out), as Flax does (HF stores (out, in)).

    A frozen kernel may be a `QuantizedKernel` (NF4 or int8, `jaxcult.models.quantize`),
    dequantised to the compute dtype inside the call."""

    def __init__(self, in_features: int, out_features: int, *, axes: tuple[str, str],
                 use_bias: bool = True, param_dtype=jnp.float32, dtype=jnp.float32,
                 init_std: float = 0.02, rngs: nnx.Rngs) -> None:
        self.kernel = param(rngs, jax.nn.initializers.normal(init_std), (in_features, out_features),
                            param_dtype, axes)
        self.bias = (param(rngs, jax.nn.initializers.zeros, (out_features,), param_dtype, (axes[1],))
                     if use_bias else None)
        self.dtype = dtype
        # Optional LoRA factors (attached by `jaxcult.peft.lora`):
        # y += (dropout(x) A) B * lora_scaling.
        self.lora_a: nnx.Param | None = nnx.data(None)
        self.lora_b: nnx.Param | None = nnx.data(None)
        self.lora_scaling = 1.0
        self.lora_dropout = 0.0
        self.lora_off = False  # `jaxcult.peft.switch.adapters_off`: the base projection alone

    @property
    def quantized(self) -> bool:
        return isinstance(self.kernel, QuantizedKernel)

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """(in, out), whether the kernel is stored in full or quantised."""
        return self.kernel.shape if self.quantized else tuple(self.kernel.shape)

    @property
    def kernel_axes(self) -> tuple[str, str]:
        return self.kernel.axes if self.quantized else self.kernel.get_metadata()["axes"]

    def __call__(self, x: jax.Array, keys: KeySplitter | None = None) -> jax.Array:
        """`keys` supplies the LoRA dropout key in training (drawn only when LoRA dropout is on)."""
        # Flatten leading dims: a plain 2-D matmul keeps XLA CPU's backward free of the transpose
        # copies that a 3-D dot_general's weight gradient needs.
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        y = (self.kernel.matmul(flat, self.dtype) if self.quantized
             else matmul(flat, self.kernel[...], self.dtype))
        if self.lora_a is not None and not self.lora_off:
            lora_in = flat
            if self.lora_dropout and keys is not None:
                lora_in = dropout(flat, self.lora_dropout, keys.next())
            low = matmul(lora_in, self.lora_a[...], self.dtype)
            y = y + matmul(low, self.lora_b[...], self.dtype) * self.lora_scaling
        y = y.reshape(*lead, y.shape[-1])
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """Token/position/type embedding table of shape (num, features). A frozen table may be a
    `QuantizedKernel` of its transpose (blocks along the features, as in HF's layout)."""

    def __init__(self, num: int, features: int, *, axes: tuple[str, str] = ("vocab", "embed"),
                 param_dtype=jnp.float32, dtype=jnp.float32, init_std: float = 0.02,
                 rngs: nnx.Rngs) -> None:
        self.embedding = param(rngs, jax.nn.initializers.normal(init_std), (num, features),
                               param_dtype, axes)
        self.dtype = dtype

    @property
    def quantized(self) -> bool:
        return isinstance(self.embedding, QuantizedKernel)

    def __call__(self, ids: jax.Array) -> jax.Array:
        if self.quantized:
            return jnp.take(self.embedding.dequantize(self.dtype).T, ids, axis=0)
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output projection: logits over the table's rows."""
        x = x.astype(self.dtype)
        if self.quantized:
            return self.embedding.matmul(x.reshape(-1, x.shape[-1]), self.dtype).reshape(
                *x.shape[:-1], -1)
        return jnp.dot(x, self.embedding[...].astype(self.dtype).T)


class LayerNorm(nnx.Module):
    """LayerNorm computed in float32 (as PyTorch does for fp32 and autocast), over the last
    axis. Cohere's has no bias (`use_bias=False`), and its per-head QK-norm a scale per head
    (`features=(heads, head_dim)`, axes `("heads", "head_dim")`)."""

    def __init__(self, features: int | tuple[int, ...], *, eps: float, param_dtype=jnp.float32,
                 dtype=jnp.float32, use_bias: bool = True, axes: Axes = ("norm",),
                 rngs: nnx.Rngs) -> None:
        shape = (features,) if isinstance(features, int) else tuple(features)
        self.scale = param(rngs, jax.nn.initializers.ones, shape, param_dtype, axes)
        self.bias = (param(rngs, jax.nn.initializers.zeros, shape, param_dtype, axes)
                     if use_bias else None)
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(self.dtype)


class RMSNorm(nnx.Module):
    """Llama RMSNorm: normalise in float32, cast back, then scale (HF's order of operations)."""

    def __init__(self, features: int, *, eps: float, param_dtype=jnp.float32, dtype=jnp.float32,
                 rngs: nnx.Rngs) -> None:
        self.scale = param(rngs, jax.nn.initializers.ones, (features,), param_dtype, ("norm",))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (self.scale[...].astype(self.dtype) * y.astype(self.dtype)).astype(self.dtype)


class OffsetRMSNorm(nnx.Module):
    """Gemma's RMSNorm: the scale is stored as an offset from one (x̂ · (1 + w)), and the
    product is taken in float32 before casting back (HF's order for Gemma)."""

    def __init__(self, features: int, *, eps: float, param_dtype=jnp.float32, dtype=jnp.float32,
                 rngs: nnx.Rngs) -> None:
        self.scale = param(rngs, jax.nn.initializers.zeros, (features,), param_dtype, ("norm",))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.scale[...].astype(jnp.float32))).astype(self.dtype)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; `key=None` means evaluation mode (identity)."""
    if key is None or rate == 0.0:
        return x
    keep = keep_mask(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class KeySplitter:
    """Hands out a fresh dropout key per call site from one key (or None at eval time): the
    n-th key is `fold_in(key, n)`. The counter may be traced (a scanned layer stack carries it
    through the scan), so a scanned model draws the unrolled model's keys."""

    def __init__(self, key: jax.Array | None, count: int | jax.Array = 0) -> None:
        self._key, self._count = key, count

    @property
    def key(self) -> jax.Array | None:
        return self._key

    @property
    def count(self) -> int | jax.Array:
        """How many keys were handed out so far."""
        return self._count

    def next(self) -> jax.Array | None:
        if self._key is None:
            return None
        self._count += 1
        return jax.random.fold_in(self._key, self._count)

    def copy(self) -> KeySplitter:
        """A splitter that continues from this one's position independently."""
        return KeySplitter(self._key, self._count)

    def skip_to(self, other: KeySplitter) -> None:
        """Continue after the keys that `other` (a copy of this one) handed out."""
        self._count = other._count

    def continue_from(self, count: int | jax.Array) -> None:
        """Continue after `count` keys (drawn elsewhere, e.g. inside a scan)."""
        if self._key is not None:
            self._count = count


def _scores(scores: jax.Array, scale: float, softcap: float | None) -> jax.Array:
    """Scaled attention logits, squashed into (-softcap, softcap) when set (Gemma 2)."""
    scores = scores * scale
    return scores if softcap is None else jnp.tanh(scores / softcap) * softcap


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, *,
              dropout_rate: float = 0.0, dropout_key: jax.Array | None = None,
              scale: float | None = None, softcap: float | None = None) -> jax.Array:
    """Softmax attention over [batch, len, heads, head_dim]; k/v heads may be fewer (GQA).

    `bias` is additive, broadcastable to [batch, heads, q_len, k_len]; softmax runs in float32.
    `scale` defaults to head_dim^-1/2; `softcap` bounds the logits before the bias (Gemma 2).
    Heads are moved in front before the batched matmuls: XLA's CPU backend runs these several
    times faster than the equivalent einsum over the [b, len, h, d] layout.
    """
    groups = q.shape[2] // k.shape[2]
    if groups > 1:
        k = jnp.repeat(k, groups, axis=2)
        v = jnp.repeat(v, groups, axis=2)
    scores = jnp.matmul(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 3, 1)).astype(jnp.float32)
    scores = _scores(scores, q.shape[-1] ** -0.5 if scale is None else scale, softcap)
    if bias is not None:
        scores = scores + bias
    weights = dropout(jax.nn.softmax(scores, axis=-1), dropout_rate, dropout_key).astype(v.dtype)
    return jnp.matmul(weights, v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, *,
                     scale: float | None = None, softcap: float | None = None) -> jax.Array:
    """`attention` (no dropout) with keys and values in a KV cache's layout [batch, kv_heads,
    k_len, head_dim]. The query heads sharing a key/value head are stacked along the query
    axis, so each product is one batched matmul over (batch, kv_heads) reading the cache as it
    lies: no per-head repeat or transposed copy of it, which dominated a decode step's time."""
    batch, length, heads, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    q = q.reshape(batch, length, kv_heads, groups, dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, kv_heads, groups * length, dim)
    scores = _scores(jnp.matmul(q, k.transpose(0, 1, 3, 2)).astype(jnp.float32),
                     dim ** -0.5 if scale is None else scale, softcap)
    scores = scores.reshape(batch, kv_heads, groups, length, -1) + bias[:, :, None]
    weights = jax.nn.softmax(scores.reshape(batch, kv_heads, groups * length, -1), axis=-1)
    context = jnp.matmul(weights.astype(v.dtype), v).reshape(batch, kv_heads, groups, length, dim)
    return context.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, dim)


def same_segment(segment_ids: jax.Array) -> jax.Array:
    """[batch, len] document ids of packed rows (0: padding) -> [batch, 1, len, len] whether
    query and key are real tokens of one document."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & (segment_ids[:, None, :] != 0))[:, None]


def segment_bias(segment_ids: jax.Array) -> jax.Array:
    """Additive attention bias of packed rows: a token attends only to its own document."""
    return jnp.where(same_segment(segment_ids), 0.0, jnp.finfo(jnp.float32).min)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """[batch, len] position of each token within its (contiguous) document."""
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
    starts = segment_ids != jnp.pad(segment_ids, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
    return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


def padding_bias(mask: jax.Array) -> jax.Array:
    """[batch, k_len] 1/0 mask -> additive [batch, 1, 1, k_len] bias."""
    return jnp.where(mask[:, None, None, :].astype(bool), 0.0, jnp.finfo(jnp.float32).min)
