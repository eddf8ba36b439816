"""Greedy decoding with the functional KV cache: one jitted prefill, one jitted decode step."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult.models.decoder import CausalLM, KVCache


@partial(jax.jit, static_argnums=(0,))
def _forward(graphdef, state, ids, mask, cache):
    model = nnx.merge(graphdef, state)
    out = model(ids, mask, cache=cache)
    return out.logits[:, -1], out.cache


def greedy_generate(model: CausalLM, prompt_ids: list[int], max_new_tokens: int,
                    eos_token_id: int | None = None) -> list[int]:
    """Greedy continuation of one prompt (stops at `eos_token_id`)."""
    graphdef, state = nnx.split(model)
    ids = jnp.asarray([prompt_ids], jnp.int32)
    cache = KVCache.empty(model.config, 1, len(prompt_ids) + max_new_tokens,
                          dtype=jnp.dtype(model.config.dtype))
    logits, cache = _forward(graphdef, state, ids, jnp.ones_like(ids), cache)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        token = int(np.asarray(logits).argmax(-1)[0])
        generated.append(token)
        if token == eos_token_id:
            break
        step = jnp.asarray([[token]], jnp.int32)
        logits, cache = _forward(graphdef, state, step, jnp.ones_like(step), cache)
    return generated
