"""Log-probabilities of given continuations: option scoring for evaluations.

For each (prompt, continuation) pair the continuation's tokens are those the tokenizer gives
`prompt + continuation` beyond the prompt's own tokens (as lm-evaluation-harness does, so
merges across the boundary are handled); if the prompt's tokens are not a prefix of the
whole, the continuation is tokenised on its own and appended. Sequences are left-padded to
length buckets (one compiled forward per bucket, batches padded to `batch_size`), and the
continuation's log-likelihood is the sum of its tokens' log-probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.engine import bucket_for, left_pad


@dataclass
class ContinuationScore:
    logprob: float        # sum over the continuation's tokens
    tokens: int           # how many tokens the continuation has
    greedy: bool          # whether greedy decoding would have produced exactly these tokens


def split_tokens(tokenizer, prompt: str, continuation: str, add_special_tokens: bool
                 ) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) with the boundary handled as described above."""
    context = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    whole = tokenizer(prompt + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    if whole[:len(context)] == context and len(whole) > len(context):
        return context, whole[len(context):]
    return context, tokenizer(continuation, add_special_tokens=False)["input_ids"]


@partial(jax.jit, static_argnums=(0,))
def _token_logprobs(graphdef, state, ids, mask, targets):
    model = nnx.merge(graphdef, state)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits = model(ids, mask, positions).logits.astype(jnp.float32)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    return picked, logits.argmax(-1) == targets


def score(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
          config: GenerationConfig = GenerationConfig(), *, add_special_tokens: bool = True
          ) -> list[ContinuationScore]:
    """Log-likelihood of each continuation given its prompt (pairs in input order)."""
    if len(prompts) != len(continuations):
        raise UserError(f"score: {len(prompts)} prompts but {len(continuations)} continuations")
    graphdef, state = nnx.split(model)
    pairs = [split_tokens(tokenizer, p, c, add_special_tokens) for p, c in zip(prompts, continuations)]
    for index, (context, ending) in enumerate(pairs):
        if not context or not ending:
            raise UserError(f"score: pair {index} has an empty prompt or continuation")
        if bucket_for(len(context) + len(ending) - 1, config.length_buckets) is None:
            raise UserError(f"score: pair {index} has {len(context) + len(ending)} tokens, more than "
                            f"the largest length bucket ({max(config.length_buckets)})")
    order = sorted(range(len(pairs)), key=lambda i: sum(map(len, pairs[i])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: dict[int, ContinuationScore] = {}
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        sequences = [pairs[i][0] + pairs[i][1] for i in batch]
        length = bucket_for(max(len(s) for s in sequences) - 1, config.length_buckets)
        ids, mask = left_pad([s[:-1] for s in sequences], length, config.batch_size, pad)
        targets, _ = left_pad([s[1:] for s in sequences], length, config.batch_size, pad)
        picked, hits = (np.asarray(x) for x in _token_logprobs(
            graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(targets)))
        for row, index in enumerate(batch):
            n = len(pairs[index][1])
            results[index] = ContinuationScore(float(picked[row, -n:].sum(dtype=np.float64)), n,
                                               bool(hits[row, -n:].all()))
    return [results[i] for i in range(len(pairs))]


@partial(jax.jit, static_argnums=(0,))
def _last_logprobs(graphdef, state, ids, mask, candidates):
    model = nnx.merge(graphdef, state)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits = model(ids, mask, positions, last_only=True).logits[:, -1].astype(jnp.float32)
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), candidates, axis=-1)


def next_token_logprobs(model, tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[int]],
                        config: GenerationConfig = GenerationConfig(), *,
                        add_special_tokens: bool = True,
                        on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Log-probabilities of candidate next tokens after each prompt: one forward per prompt
    (for single-token options, the same numbers `score` gives with one forward per option).
    `candidates[i]` lists token ids for prompt i; prompts are left-padded to length buckets."""
    if len(prompts) != len(candidates):
        raise UserError(f"next_token_logprobs: {len(prompts)} prompts but {len(candidates)} "
                        f"candidate lists")
    graphdef, state = nnx.split(model)
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    for index, ids in enumerate(encoded):
        if not ids or bucket_for(len(ids), config.length_buckets) is None:
            raise UserError(f"next_token_logprobs: prompt {index} has {len(ids)} tokens (empty, "
                            f"or more than the largest length bucket {max(config.length_buckets)})")
    width = max(map(len, candidates))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: dict[int, np.ndarray] = {}
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        length = bucket_for(max(len(encoded[i]) for i in batch), config.length_buckets)
        ids, mask = left_pad([encoded[i] for i in batch], length, config.batch_size, pad)
        wanted = np.zeros((config.batch_size, width), np.int32)
        for row, index in enumerate(batch):
            wanted[row, :len(candidates[index])] = candidates[index]
        picked = np.asarray(_last_logprobs(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                                           jnp.asarray(wanted)))
        for row, index in enumerate(batch):
            results[index] = picked[row, :len(candidates[index])].astype(np.float64)
        if on_batch is not None:
            on_batch(len(batch))
    return [results[i] for i in range(len(encoded))]
