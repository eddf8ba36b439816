"""Log-probabilities of given continuations: option scoring for evaluations.

For each (prompt, continuation) pair the continuation's tokens are those the tokenizer gives
`prompt + continuation` beyond the prompt's own tokens (as lm-evaluation-harness does, so
merges across the boundary are handled); if the prompt's tokens are not a prefix of the
whole, the continuation is tokenised on its own and appended. Sequences are left-padded to
length buckets (one compiled forward per bucket, batches padded to `batch_size`), and the
continuation's log-likelihood is the sum of its tokens' log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
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
