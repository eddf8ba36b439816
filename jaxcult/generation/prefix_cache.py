"""Prompts' keys and values kept between batches, so that a prompt which starts like an earlier
one computes only the tokens after the shared start.

A dialogue re-sends its whole history every turn (CLCA role-play, intent annotation, a chat
server): without this, each turn's prefill recomputes every earlier token. `PrefixCache` holds
the keys and values of recent prompts in a pool of blocks of `BLOCK` positions (per layer
[blocks, kv_heads, BLOCK, head_dim]; `generation.prefix_cache_mb` sizes it), evicting the least
recently used prompt when full; the pool starts empty and grows (at least doubling) while it is
under the budget. For a new batch, each prompt takes the longest start it shares
with a stored prompt (at least one token of its own is left to compute); the engine gathers
those blocks into the front of the batch's KV cache, each row's reused tokens ending at slot P
(the batch's longest reuse), and runs the remaining tokens left-padded in the slots after P, at
their true positions. The padding between the two parts is masked, which a sliding attention
window would count, so such models are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxcult.errors import UserError
from jaxcult.generation.limits import MIB, kv_cache_bytes
from jaxcult.models.decoder import KVCache

BLOCK = 32  # positions per pool block


@struct.dataclass
class Pool:
    keys: tuple[jax.Array, ...]    # per layer [blocks, kv_heads, BLOCK, head_dim]
    values: tuple[jax.Array, ...]


@dataclass
class Entry:
    ids: np.ndarray      # the stored prompt's tokens
    blocks: list[int]    # pool blocks holding their keys and values, in order
    used: int            # when it was stored or last reused (least recently used goes first)


def common_start(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def blocks_for(positions: int) -> int:
    return -(-positions // BLOCK)


@partial(jax.jit, static_argnums=(3,))
def assemble(pool: Pool, table: jax.Array, reused: jax.Array, cache_length: int) -> KVCache:
    """A batch cache of `cache_length` slots whose row b holds its `reused[b]` stored tokens
    (blocks `table[b]`) in the slots ending at P = max(reused); its length is P."""
    start = reused.max()
    # slot s of row b holds stored token s - (P - reused[b]) where that is in [0, reused[b])
    token = jnp.arange(cache_length)[None, :] - (start - reused)[:, None]
    valid = (token >= 0) & (token < reused[:, None])
    index = jnp.clip(token, 0, table.shape[1] * BLOCK - 1)[:, None, :, None]

    def place(stored: jax.Array) -> jax.Array:
        rows = stored[table]                       # [batch, blocks, kv, BLOCK, dim]
        b, n, kv, _, dim = rows.shape
        rows = rows.transpose(0, 2, 1, 3, 4).reshape(b, kv, n * BLOCK, dim)
        taken = jnp.take_along_axis(rows, index, axis=2)
        return jnp.where(valid[:, None, :, None], taken, jnp.zeros((), taken.dtype))

    return KVCache(tuple(map(place, pool.keys)), tuple(map(place, pool.values)), start,
                   valid.astype(jnp.int32))


@partial(jax.jit, donate_argnums=(0,))
def store(pool: Pool, cache: KVCache, slots: jax.Array, table: jax.Array) -> Pool:
    """Write each row's prompt tokens (cache slots `slots[b]`, in order) into blocks
    `table[b]`; table entries past the pool (unused blocks) are dropped."""
    def write(stored: jax.Array, layer: jax.Array) -> jax.Array:
        rows = jnp.take_along_axis(layer, slots[:, None, :, None], axis=2)   # [b, kv, n*B, d]
        b, kv, _, dim = rows.shape
        blocks = rows.reshape(b, kv, table.shape[1], BLOCK, dim).transpose(0, 2, 1, 3, 4)
        return stored.at[table.reshape(-1)].set(
            blocks.reshape(-1, kv, BLOCK, dim).astype(stored.dtype), mode="drop")

    return Pool(tuple(map(write, pool.keys, cache.keys)),
                tuple(map(write, pool.values, cache.values)))


class PrefixCache:
    """Stored prompts and their keys and values, least recently used evicted first."""

    def __init__(self, model_config, megabytes: int, longest_prompt: int) -> None:
        """A pool of at most `megabytes`, empty at first and grown (at least doubled) when a
        batch's prompts do not fit, so a large budget costs memory only once used."""
        block_bytes = kv_cache_bytes(model_config, 1, BLOCK)
        self.budget = megabytes * MIB // block_bytes   # blocks at most
        needed = blocks_for(longest_prompt)
        if self.budget < needed:
            raise UserError(f"generation.prefix_cache_mb: {megabytes} MB cannot hold one prompt of "
                            f"the largest length bucket ({longest_prompt} tokens need "
                            f"{-(-needed * block_bytes // MIB)} MB for this model); raise it "
                            f"or set 0 (off)")
        self.block_shape = (model_config.num_key_value_heads, BLOCK, model_config.head_dim)
        self.dtype = jnp.dtype(model_config.dtype)
        empty = [jnp.zeros((0, *self.block_shape), self.dtype)
                 for _ in range(2 * model_config.num_hidden_layers)]
        self.pool = Pool(tuple(empty[0::2]), tuple(empty[1::2]))
        self.size = 0                                   # blocks allocated
        self.free: list[int] = []
        self.entries: list[Entry] = []
        self.clock = 0
        self.reused_tokens = self.prompt_tokens = 0   # totals, for logs and benchmarks

    def _grow(self, blocks: int) -> None:
        """Enlarge the pool to `blocks` (existing blocks keep their ids and contents)."""
        def widen(layer: jax.Array) -> jax.Array:
            more = jnp.zeros((blocks - self.size, *self.block_shape), self.dtype)
            return jnp.concatenate([layer, more])

        self.pool = Pool(tuple(map(widen, self.pool.keys)), tuple(map(widen, self.pool.values)))
        self.free.extend(range(self.size, blocks))
        self.size = blocks

    def match(self, prompts: Sequence[Sequence[int]]) -> list[tuple[Entry | None, int]]:
        """Per prompt, the stored prompt sharing its longest start and that start's length
        (at most len(prompt) - 1: the last token is always computed)."""
        found = []
        self.clock += 1
        for prompt in prompts:
            ids = np.asarray(prompt)
            best, length = None, 0
            for entry in self.entries:
                shared = min(common_start(entry.ids, ids), len(ids) - 1)
                if shared > length:
                    best, length = entry, shared
            if best is not None:
                best.used = self.clock
            found.append((best, length))
        return found

    def table(self, found: list[tuple[Entry | None, int]], rows: int, width: int) -> np.ndarray:
        """[rows, width] block ids of each row's reused tokens (0 where unused: masked)."""
        table = np.zeros((rows, width), np.int32)
        for row, (entry, length) in enumerate(found):
            if entry is not None:
                used = entry.blocks[:blocks_for(length)]
                table[row, :len(used)] = used
        return table

    def add(self, cache: KVCache, prompts: Sequence[Sequence[int]], slots: np.ndarray) -> None:
        """Store each row's prompt (its tokens at cache slots `slots[row]`), replacing stored
        prompts it extends and evicting the least recently used where the pool is full."""
        table = np.full((slots.shape[0], slots.shape[1] // BLOCK), self.budget, np.int32)
        older = list(self.entries)   # this batch's blocks are written together: never reused here
        wanted = sum(blocks_for(len(p)) for p in prompts)
        if len(self.free) < wanted and self.size < self.budget:
            self._grow(min(self.budget, max(2 * self.size, self.size + wanted - len(self.free))))
        for row, prompt in enumerate(prompts):
            ids = np.asarray(prompt)
            self.prompt_tokens += len(ids)
            self._drop([e for e in older if len(e.ids) <= len(ids)
                        and common_start(e.ids, ids) == len(e.ids)], older)
            needed = blocks_for(len(ids))
            while len(self.free) < needed and older:
                self._drop([min(older, key=lambda e: e.used)], older)
            if len(self.free) < needed:
                continue
            blocks, self.free = self.free[:needed], self.free[needed:]
            table[row, :needed] = blocks
            self.entries.append(Entry(ids, blocks, self.clock))
        self.pool = store(self.pool, cache, jnp.asarray(slots), jnp.asarray(table))

    def _drop(self, entries: list[Entry], older: list[Entry]) -> None:
        for entry in entries:
            self.entries.remove(entry)
            older.remove(entry)
            self.free.extend(entry.blocks)
