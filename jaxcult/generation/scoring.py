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
from jaxcult.generation.engine import bucket_for, left_pad, left_padded_positions


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


@partial(jax.jit, static_argnums=(0, 5))
def _token_logprobs(graphdef, state, ids, mask, targets, tail: int):
    """Log-probabilities of `targets` at the last `tail` positions (the continuations are
    right-aligned: the vocabulary projection runs only where a continuation token is)."""
    model = nnx.merge(graphdef, state)
    positions = left_padded_positions(mask)
    logits = model(ids, mask, positions, last_only=tail).logits.astype(jnp.float32)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    targets = targets[:, -tail:]
    picked = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    return picked, logits.argmax(-1) == targets


def _tail_bucket(longest: int, length: int) -> int:
    """Positions that get logits: the next power of two holding the longest continuation (so a
    handful of programs serve every batch), at most the whole sequence."""
    return min(1 << max(longest - 1, 0).bit_length(), length)


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
        tail = _tail_bucket(max(len(pairs[i][1]) for i in batch), length)
        picked, hits = (np.asarray(x) for x in _token_logprobs(
            graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(targets), tail))
        for row, index in enumerate(batch):
            n = len(pairs[index][1])
            results[index] = ContinuationScore(float(picked[row, -n:].sum(dtype=np.float64)), n,
                                               bool(hits[row, -n:].all()))
    return [results[i] for i in range(len(pairs))]


@partial(jax.jit, static_argnums=(0,))
def _last_logprobs(graphdef, state, ids, mask, candidates):
    model = nnx.merge(graphdef, state)
    positions = left_padded_positions(mask)
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


def single_token_options(tokenizer, prompt: str, options: Sequence[str],
                         add_special_tokens: bool = False) -> list[int] | None:
    """The option tokens when every option is one token right after `prompt`, else None."""
    tokens = []
    for option in options:
        _, ending = split_tokens(tokenizer, prompt, option, add_special_tokens)
        if len(ending) != 1:
            return None
        tokens.append(ending[0])
    return tokens


def option_logprobs(model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]],
                    config: GenerationConfig = GenerationConfig(), *, one_forward: bool = True,
                    add_special_tokens: bool = False,
                    on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Log-likelihood of each of prompt i's `options[i]` as its continuation. Prompts whose
    options are all single tokens are scored with one forward each (`one_forward`), the others
    with one forward per option (`score`); both give the same numbers."""
    if len(prompts) != len(options):
        raise UserError(f"option_logprobs: {len(prompts)} prompts but {len(options)} option lists")
    single = [single_token_options(tokenizer, p, o, add_special_tokens) if one_forward else None
              for p, o in zip(prompts, options)]
    fast = [i for i, tokens in enumerate(single) if tokens is not None]
    logps: dict[int, np.ndarray] = dict(zip(fast, next_token_logprobs(
        model, tokenizer, [prompts[i] for i in fast], [single[i] for i in fast], config,
        add_special_tokens=add_special_tokens, on_batch=on_batch))) if fast else {}
    slow = [i for i, tokens in enumerate(single) if tokens is None]
    pairs = [(i, option) for i in slow for option in options[i]]
    if pairs:
        scores = iter(score(model, tokenizer, [prompts[i] for i, _ in pairs],
                            [option for _, option in pairs], config,
                            add_special_tokens=add_special_tokens))
        for i in slow:
            logps[i] = np.array([next(scores).logprob for _ in options[i]])
        if on_batch is not None:
            on_batch(len(slow))
    return [logps[i] for i in range(len(prompts))]
