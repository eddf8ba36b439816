"""Choosing the next token: transformers' logits processors, as pure functions of [batch, vocab].

The order and the definitions are those of `transformers.GenerationMixin`: repetition penalty
(on every token seen so far, prompt included), then, when sampling, temperature, top-k, top-p
(nucleus) and min-p; greedy decoding takes the argmax of the penalised logits. Removed tokens
get -inf. Sampling draws from the processed distribution with a key derived from the seed and the
position, so a run is reproducible.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Sampling(NamedTuple):
    """Static (hashable) decoding settings, a jit argument."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0


def repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
    """CTRL's penalty on tokens already in the sequence: divide positive logits, multiply
    negative ones."""
    penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalised, logits)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keep the tokens whose logit is at least the k-th largest (ties kept, as in transformers)."""
    k = min(k, logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Nucleus: drop the least likely tokens whose cumulative probability stays <= 1 - top_p
    (the most likely token always stays).

    Without sorting: the kept tokens are those with probability >= v*, the smallest probability
    whose "mass at or below it" exceeds 1 - top_p. v* is found by bisection on the float's bit
    pattern (monotone for non-negative floats): 31 masked sums over the vocabulary instead of
    two argsorts, ~10x faster per decode step on CPU. Only exact ties at the boundary can be
    treated differently from transformers' sort (which splits them by index)."""
    probs = jax.nn.softmax(logits, axis=-1)
    bits = jax.lax.bitcast_convert_type(probs, jnp.int32)
    limit = 1.0 - top_p

    def narrow(_, bounds):
        low, high = bounds   # invariant: mass(bits <= high) > limit
        middle = low + (high - low) // 2
        above = jnp.where(bits <= middle[..., None], probs, 0.0).sum(-1) > limit
        return jnp.where(above, low, middle + 1), jnp.where(above, middle, high)

    rows = logits.shape[:-1]
    start = (jnp.zeros(rows, jnp.int32), jnp.full(rows, 0x7F800000, jnp.int32))
    _, threshold = jax.lax.fori_loop(0, 31, narrow, start)
    return jnp.where(bits >= threshold[..., None], logits, -jnp.inf)


def min_p_filter(logits: jax.Array, min_p: float) -> jax.Array:
    """Drop tokens whose probability is below min_p times the top token's."""
    probs = jax.nn.softmax(logits, axis=-1)
    keep = probs >= min_p * probs.max(axis=-1, keepdims=True)
    return jnp.where(keep, logits, -jnp.inf)


def process(logits: jax.Array, seen: jax.Array, sampling: Sampling) -> jax.Array:
    """The processed float32 logits of one step ([batch, vocab])."""
    logits = logits.astype(jnp.float32)
    if sampling.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, seen, sampling.repetition_penalty)
    if not sampling.do_sample:
        return logits
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    if sampling.top_k:
        logits = top_k_filter(logits, sampling.top_k)
    if sampling.top_p < 1.0:
        logits = top_p_filter(logits, sampling.top_p)
    if sampling.min_p:
        logits = min_p_filter(logits, sampling.min_p)
    return logits


def choose(logits: jax.Array, seen: jax.Array, sampling: Sampling, key: jax.Array) -> jax.Array:
    """Next token per row: argmax (greedy) or a draw from the processed distribution."""
    processed = process(logits, seen, sampling)
    if not sampling.do_sample:
        return jnp.argmax(processed, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, processed, axis=-1).astype(jnp.int32)
