"""Next-token log-probabilities of prompts that share a prefix, the prefix computed once.

A judge asking several questions about one text (seven metrics of one reply) sends prompts that
agree up to the question. Per group of such prompts the longest common prefix of their token
ids is run once into a KV cache; each prompt's remaining tokens then run against that cache and
its last position gives the log-probabilities of the candidate tokens. The numbers equal one
full forward per prompt (`scoring.next_token_logprobs`); the work drops from K × (prefix +
suffix) tokens to prefix + K × suffix.

Prefixes are left-padded to the length buckets; suffixes to the next multiple of 64 holding
the batch's longest (a few compiled programs: a judge's suffixes differ little), right-aligned
so the last position is each prompt's last token. The padding between a prefix and its
suffixes takes cache slots, which a sliding attention window would count: such models are
refused (`supports`), callers fall back to full forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.engine import bucket_for, left_pad, left_padded_positions
from jaxcult.models.decoder import KVCache

SUFFIX_STEP = 64


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all sequences share, leaving each at least one token of its own."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


@partial(jax.jit, static_argnums=(0, 4))
def _prefix_cache(graphdef, state, ids, mask, cache_length: int) -> KVCache:
    model = nnx.merge(graphdef, state)
    positions = left_padded_positions(mask)
    cache = KVCache.empty(model.config, ids.shape[0], cache_length,
                          dtype=jnp.dtype(model.config.dtype))
    return model(ids, mask, positions, cache=cache, last_only=True).cache


@partial(jax.jit, static_argnums=(0,))
def _suffix_logprobs(graphdef, state, cache, prefix_lengths, ids, mask, candidates):
    model = nnx.merge(graphdef, state)
    positions = left_padded_positions(mask, prefix_lengths)
    logits = model(ids, mask, positions, cache=cache, last_only=True).logits[:, -1]
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return logprobs[:, candidates]


def supports(model) -> bool:
    """Whether the model's attention is unaffected by padding slots (no sliding window)."""
    return getattr(model.config, "sliding_window", None) is None


def _suffix_width(n: int) -> int:
    return -(-n // SUFFIX_STEP) * SUFFIX_STEP


def shared_prefix_logprobs(model, tokenizer, groups: Sequence[Sequence[str]],
                           candidates: Sequence[int], config: GenerationConfig = GenerationConfig(),
                           *, add_special_tokens: bool = False,
                           on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Per group of K prompts, [K, len(candidates)] log-probabilities of the candidate tokens
    after each prompt. Every group has the same K; a prompt longer than the largest length
    bucket is an error (callers filter those first)."""
    if not groups:
        return []
    if not supports(model):
        raise UserError("shared_prefix_logprobs: the model has sliding-window attention, which "
                        "would count the padding between prefix and suffix")
    width = len(groups[0])
    if width == 0 or any(len(g) != width for g in groups):
        raise UserError("shared_prefix_logprobs: every group needs the same number (>= 1) of "
                        "prompts")
    encoded = [[tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in group]
               for group in groups]
    longest = max(config.length_buckets)
    for index, group in enumerate(encoded):
        too_long = [len(ids) for ids in group if not ids or len(ids) > longest]
        if too_long:
            raise UserError(f"shared_prefix_logprobs: group {index} has a prompt of {too_long[0]} "
                            f"tokens (empty, or more than the largest length bucket {longest})")
    shared = [common_prefix(group) for group in encoded]
    graphdef, state = nnx.split(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    wanted = jnp.asarray(np.asarray(candidates, np.int32))
    order = sorted(range(len(groups)), key=lambda i: shared[i])
    results: dict[int, np.ndarray] = {}
    rows = config.batch_size
    for start in range(0, len(order), rows):
        batch = order[start:start + rows]
        prefix_length = bucket_for(max(max(shared[i] for i in batch), 1), config.length_buckets)
        suffix_length = _suffix_width(max(len(ids) - shared[i] for i in batch
                                          for ids in encoded[i]))
        ids, mask = left_pad([encoded[i][0][:shared[i]] for i in batch], prefix_length, rows, pad)
        cache = _prefix_cache(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                              prefix_length + suffix_length)
        lengths = np.zeros(rows, np.int32)
        lengths[:len(batch)] = [shared[i] for i in batch]
        found = np.zeros((len(batch), width, len(candidates)))
        for member in range(width):
            ids, mask = left_pad([encoded[i][member][shared[i]:] for i in batch], suffix_length,
                                 rows, pad)
            picked = _suffix_logprobs(graphdef, state, cache, jnp.asarray(lengths),
                                      jnp.asarray(ids), jnp.asarray(mask), wanted)
            found[:, member] = np.asarray(picked)[:len(batch)]
        for row, index in enumerate(batch):
            results[index] = found[row]
        if on_batch is not None:
            on_batch(len(batch))
    return [results[i] for i in range(len(groups))]
