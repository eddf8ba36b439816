"""Batched decoding with the KV cache on the whole batch, in static shapes.

A batch of up to `batch_size` prompts is left-padded to the smallest length bucket that holds
its longest prompt (rows beyond the prompts are padding and start finished), with position ids
counted over real tokens only, as transformers does for left padding. One jitted prefill per
bucket fills a cache of that bucket plus `max_new_tokens` positions (every query attends over
the whole cache: one sized for the largest bucket made a short prompt's prefill several times
slower), and one jitted decode function per cache length runs up to `chunk` steps in a
`lax.while_loop` (choose a token, append it, run the model on it) and stops early once every
row has finished (EOS, a stop token, or the length limit). Between chunks the host decodes the
new text of each unfinished row and ends rows whose text contains a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import Mesh

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.limits import check_generation_fits
from jaxcult.generation.prefix_cache import BLOCK, PrefixCache, assemble, blocks_for
from jaxcult.generation.sampling import Sampling, choose
from jaxcult.models.decoder import CausalLM, KVCache
from jaxcult.sharding import Rules, batch_sharding, check_batch_divisible, place_variables


@struct.dataclass
class DecodeState:
    """Everything one decode step reads and writes (all [batch, ...] except `count` and `key`)."""

    cache: KVCache
    logits: jax.Array      # [batch, vocab] logits for the next token
    positions: jax.Array   # [batch] position id of the last token
    seen: jax.Array        # [batch, vocab] tokens in the sequence (repetition penalty)
    tokens: jax.Array      # [batch, max_new] generated tokens (pad after a row finishes)
    done: jax.Array        # [batch] finished rows
    limits: jax.Array      # [batch] new tokens each row may generate
    count: jax.Array       # scalar: tokens generated so far
    key: jax.Array
    logprobs: jax.Array    # [batch, max_new or 0] log-probability of each chosen token
    top_ids: jax.Array     # [batch, max_new or 0, k] the k most likely tokens at each step
    top_logprobs: jax.Array  # [batch, max_new or 0, k] and their log-probabilities


@dataclass
class Completion:
    """One prompt's result: text (stop string trimmed), new token ids and why it stopped."""

    text: str
    token_ids: list[int]
    finish_reason: str     # "eos" (or a stop token), "stop_string", "length" or "error"
    prompt_tokens: int
    error: str | None = None
    logprobs: list[float] | None = None     # per new token (when asked for)
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per new token: (id, logprob)


def bucket_for(length: int, buckets: Sequence[int]) -> int | None:
    return next((b for b in buckets if b >= length), None)


def left_pad(prompts: Sequence[Sequence[int]], length: int, rows: int, pad_id: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """[rows, length] ids and mask, prompts right-aligned; rows past the prompts are all pad."""
    ids = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, -len(prompt):] = prompt
            mask[row, -len(prompt):] = 1
    return ids, mask


def left_padded_positions(mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
    """Position ids of left-padded rows counted over their real tokens (as transformers does),
    from `start` ([rows] or a scalar: the tokens already in the cache before these)."""
    return jnp.asarray(start).reshape(-1, 1) + jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)


def _decoding(out, last_positions, seen, done, limits, key, max_new: int,
              top_k: int | None) -> DecodeState:
    """The decode state after a prefill's model output."""
    batch = seen.shape[0]
    steps, k = (0, 0) if top_k is None else (max_new, top_k)  # logprobs off: empty arrays
    return DecodeState(cache=out.cache, logits=out.logits[:, -1].astype(jnp.float32),
                       positions=last_positions, seen=seen,
                       tokens=jnp.zeros((batch, max_new), jnp.int32), done=done, limits=limits,
                       count=jnp.zeros((), jnp.int32), key=key,
                       logprobs=jnp.zeros((batch, steps), jnp.float32),
                       top_ids=jnp.zeros((batch, steps, k), jnp.int32),
                       top_logprobs=jnp.zeros((batch, steps, k), jnp.float32))


@partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _prefill(graphdef, state, ids, mask, limits, key, cache_length: int, max_new: int,
             top_k: int | None) -> DecodeState:
    model = nnx.merge(graphdef, state)
    batch = ids.shape[0]
    positions = left_padded_positions(mask)
    cache = KVCache.empty(model.config, batch, cache_length, dtype=jnp.dtype(model.config.dtype))
    out = model(ids, mask, positions, cache=cache, last_only=True)
    vocab = out.logits.shape[-1]
    seen = jnp.zeros((batch, vocab), jnp.int32).at[jnp.arange(batch)[:, None], ids].max(mask) > 0
    return _decoding(out, positions[:, -1], seen, mask.sum(1) == 0, limits, key, max_new, top_k)


@partial(jax.jit, static_argnums=(0, 9, 10), donate_argnums=(2,))
def _prefill_reusing(graphdef, state, cache: KVCache, reused, ids, mask, seen, limits, key,
                     max_new: int, top_k: int | None) -> DecodeState:
    """`_prefill` of prompts whose first `reused[b]` tokens are in `cache` already (from the
    prefix cache's pool, gathered outside this program so that a grown pool does not
    recompile the model): only the rest (`ids`, left-padded) is computed, at positions counted
    on from the reused tokens. The assembled cache is donated: the suffix's keys and values
    are written into it in place."""
    model = nnx.merge(graphdef, state)
    positions = left_padded_positions(mask, reused)
    out = model(ids, mask, positions, cache=cache, last_only=True)
    return _decoding(out, positions[:, -1], seen, mask.sum(1) == 0, limits, key, max_new, top_k)


def _record_logprobs(d: DecodeState, token: jax.Array) -> DecodeState:
    """The model's own log-probabilities (before penalties and temperature, as vLLM and the
    OpenAI API report them) of the chosen token and the k most likely ones."""
    logprobs = jax.nn.log_softmax(d.logits, axis=-1)
    rows = jnp.arange(token.shape[0])
    d = d.replace(logprobs=d.logprobs.at[:, d.count].set(logprobs[rows, token]))
    if d.top_ids.shape[2]:
        values, ids = jax.lax.top_k(logprobs, d.top_ids.shape[2])
        d = d.replace(top_ids=d.top_ids.at[:, d.count].set(ids),
                      top_logprobs=d.top_logprobs.at[:, d.count].set(values))
    return d


@partial(jax.jit, static_argnums=(0, 3, 4), donate_argnums=(2,))
def _decode_chunk(graphdef, state, decode: DecodeState, sampling: Sampling, steps: int,
                  stop_ids: jax.Array, pad_id: jax.Array) -> DecodeState:
    model = nnx.merge(graphdef, state)
    max_new = decode.tokens.shape[1]
    rows = jnp.arange(decode.tokens.shape[0])

    def cond(carry):
        i, d = carry
        return (i < steps) & (d.count < max_new) & ~d.done.all()

    def body(carry):
        i, d = carry
        token = choose(d.logits, d.seen, sampling, jax.random.fold_in(d.key, d.count))
        token = jnp.where(d.done, pad_id, token)
        if d.logprobs.shape[1]:
            d = _record_logprobs(d, token)
        finished = d.done | jnp.isin(token, stop_ids) | (d.count + 1 >= d.limits)
        positions = d.positions + 1
        out = model(token[:, None], jnp.ones_like(token)[:, None], positions[:, None], cache=d.cache)
        return i + 1, d.replace(
            cache=out.cache, logits=out.logits[:, -1].astype(jnp.float32), positions=positions,
            seen=d.seen.at[rows, token].set(True), tokens=d.tokens.at[:, d.count].set(token),
            done=finished, count=d.count + 1)

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), decode))[1]


class Generator:
    """Batched generation for one causal LM and tokenizer with fixed decoding settings."""

    def __init__(self, model: CausalLM, tokenizer, config: GenerationConfig, *,
                 mesh: Mesh | None = None, rules: Rules | None = None,
                 row_buckets: bool = False) -> None:
        """`row_buckets`: pad a batch to the next power of two of rows (up to batch_size)
        rather than to batch_size, for callers whose batches are often small (a server): a
        lone request then decodes one row, at the price of one compile per row bucket."""
        if not isinstance(model, CausalLM):
            raise UserError(f"generation needs a causal LM, not {type(model).__name__}")
        self.graphdef, self.state = nnx.split(model)
        self.vocab_size = model.config.vocab_size
        self.mesh, self.rules = mesh, rules or {}
        if mesh is not None:  # parameters by their logical axes, batches over the batch axes
            self.state = place_variables(self.state, mesh, self.rules)
            check_batch_divisible(config.batch_size, mesh, self.rules, "generation.batch_size")
        self.tokenizer, self.config = tokenizer, config
        self.row_buckets = row_buckets and mesh is None
        if config.do_sample and config.temperature <= 0:
            raise UserError("generation.temperature must be > 0 when sampling")
        self.sampling = Sampling(config.do_sample, config.temperature, config.top_k,
                                 config.top_p, config.min_p, config.repetition_penalty)
        eos = tokenizer.eos_token_id
        stops = {*config.stop_token_ids, *([eos] if eos is not None else [])}
        if not stops and config.max_new_tokens > 4096:
            raise UserError("generation: no EOS or stop token and max_new_tokens > 4096")
        check_generation_fits(model.config, config, mesh.size if mesh is not None else 1)
        self.stop_ids = jnp.asarray(sorted(stops) or [-1], jnp.int32)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        self.pad_id = int(pad if pad is not None else 0)
        self.key = jax.random.key(config.seed)
        self.prefix_cache = self._prefix_cache(model, config, mesh)

    @staticmethod
    def _prefix_cache(model: CausalLM, config: GenerationConfig, mesh: Mesh | None
                      ) -> PrefixCache | None:
        if not config.prefix_cache_mb:
            return None
        if mesh is not None:
            raise UserError("generation.prefix_cache_mb: not supported on a device mesh yet; "
                            "set it to 0")
        if getattr(model.config, "sliding_window", None) is not None:
            raise UserError("generation.prefix_cache_mb: the model has sliding-window attention, "
                            "which would count the padding between reused and new tokens; set "
                            "it to 0")
        return PrefixCache(model.config, config.prefix_cache_mb, max(config.length_buckets))

    def place(self, array: np.ndarray) -> jax.Array:
        """A batch array on the device(s): split over the mesh's batch axes when there is one."""
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, batch_sharding(self.mesh, self.rules, array.ndim))

    def bucket(self, length: int) -> int | None:
        return bucket_for(length, self.config.length_buckets)

    def rows(self, prompts: int) -> int:
        if not self.row_buckets:
            return self.config.batch_size
        return min(1 << (prompts - 1).bit_length(), self.config.batch_size)

    def run_batch(self, prompts: Sequence[Sequence[int]], batch_index: int = 0,
                  on_chunk: Callable[[int, np.ndarray], None] | None = None, *,
                  limits: Sequence[int] | None = None,
                  stop_strings: Sequence[Sequence[str]] | None = None,
                  top_logprobs: int | None = None, seed: int | None = None) -> list[Completion]:
        """Decode up to `batch_size` tokenised prompts that all fit the largest bucket.

        Per prompt, optionally: `limits` (new tokens, at most max_new_tokens) and
        `stop_strings` (default: the config's). `top_logprobs` records each chosen token's
        log-probability and the k most likely tokens' (None: off; k = 0: the chosen token's
        only). `seed` replaces the generator's seed for this batch. `on_chunk(count, tokens)`
        sees the [batch, max_new] tokens so far after every device call."""
        config = self.config
        if not 0 < len(prompts) <= config.batch_size:
            raise ValueError(f"run_batch takes 1..{config.batch_size} prompts, got {len(prompts)}")
        limits = [config.max_new_tokens] * len(prompts) if limits is None else list(limits)
        if len(limits) != len(prompts) or not all(0 < n <= config.max_new_tokens for n in limits):
            raise ValueError(f"limits: one per prompt, each in 1..{config.max_new_tokens}")
        stops = ([list(config.stop_strings)] * len(prompts) if stop_strings is None
                 else [list(s) for s in stop_strings])
        rows = self.rows(len(prompts))
        padded = np.full(rows, config.max_new_tokens, np.int32)
        padded[:len(limits)] = limits
        key = (jax.random.fold_in(self.key, batch_index) if seed is None
               else jax.random.fold_in(jax.random.key(seed), 0))
        decode = self._prefill(prompts, rows, self.place(padded), key, top_logprobs)
        stopped: dict[int, int] = {}  # row -> characters kept (a stop string was found)
        while True:
            decode = _decode_chunk(self.graphdef, self.state, decode, self.sampling, config.chunk,
                                   self.stop_ids, jnp.int32(self.pad_id))
            count, done = int(decode.count), np.asarray(decode.done)
            tokens = np.asarray(decode.tokens)
            if any(stops):
                done = self._stop_strings(tokens, count, done, stopped, stops)
                decode = decode.replace(done=jnp.asarray(done))
            if on_chunk is not None:
                on_chunk(count, tokens)
            if done[:len(prompts)].all() or count >= config.max_new_tokens:
                break
        return self._completions(decode, count, prompts, limits, stopped, stops)

    def _prefill(self, prompts: Sequence[Sequence[int]], rows: int, limits: jax.Array,
                 key: jax.Array, top_logprobs: int | None) -> DecodeState:
        """The decode state after the prompts, reusing stored starts where the prefix cache
        has them, and storing these prompts in it."""
        config, longest = self.config, max(len(p) for p in prompts)
        reuse = self._reuse_plan(prompts, rows)
        if reuse is None:
            length = self.bucket(longest)
            ids, mask = left_pad(prompts, length, rows, self.pad_id)
            decode = _prefill(self.graphdef, self.state, self.place(ids), self.place(mask), limits,
                              key, length + config.max_new_tokens, config.max_new_tokens,
                              top_logprobs)
            slots = [range(length - len(p), length) for p in prompts]
        else:
            table, reused, suffix = reuse
            start = int(reused.max())
            ids, mask = left_pad([p[n:] for p, n in zip(prompts, reused)], suffix, rows,
                                 self.pad_id)
            seen = np.zeros((rows, self.vocab_size), bool)
            for row, prompt in enumerate(prompts):
                seen[row, prompt] = True
            reused_tokens = jnp.asarray(reused)
            cache = assemble(self.prefix_cache.pool, jnp.asarray(table), reused_tokens,
                             self.bucket(start + suffix) + config.max_new_tokens)
            decode = _prefill_reusing(
                self.graphdef, self.state, cache, reused_tokens, jnp.asarray(ids),
                jnp.asarray(mask), jnp.asarray(seen), limits, key, config.max_new_tokens,
                top_logprobs)
            self.prefix_cache.reused_tokens += int(reused.sum())
            slots = [[*range(start - n, start), *range(start + suffix - len(p) + n, start + suffix)]
                     for p, n in zip(prompts, reused)]
        if self.prefix_cache is not None:
            width = blocks_for(longest) * BLOCK
            table = np.zeros((rows, width), np.int32)
            for row, row_slots in enumerate(slots):
                table[row, :len(row_slots)] = row_slots
            self.prefix_cache.add(decode.cache, prompts, table)
        return decode

    def _reuse_plan(self, prompts: Sequence[Sequence[int]], rows: int
                    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(block table, reused tokens per row, suffix bucket) where stored starts can be
        reused within the largest bucket; None: a plain prefill."""
        if self.prefix_cache is None:
            return None
        found = self.prefix_cache.match(prompts)
        reused = np.zeros(rows, np.int32)
        reused[:len(prompts)] = [n for _, n in found]
        top = max(self.config.length_buckets)
        while reused.max() > 0:   # reuse less where reused + new tokens overflow the cache
            suffix = self.bucket(max(len(p) - n for p, n in zip(prompts, reused)))
            if reused.max() + suffix <= top:
                break
            reused = np.minimum(reused, top - suffix)
        if reused.max() == 0:
            return None
        found = [(entry, int(n)) for (entry, _), n in zip(found, reused)]
        width = blocks_for(self.bucket(int(reused.max())))
        return self.prefix_cache.table(found, rows, width), reused, suffix

    def _stop_strings(self, tokens: np.ndarray, count: int, done: np.ndarray,
                      stopped: dict[int, int], stops: list[list[str]]) -> np.ndarray:
        done = done.copy()
        for row, strings in enumerate(stops):
            if row in stopped or not strings:
                continue
            text = self.tokenizer.decode(tokens[row, :count], skip_special_tokens=True)
            found = [text.find(s) for s in strings if s in text]
            if found:
                stopped[row] = min(found)
                done[row] = True
        return done

    def _completions(self, decode: DecodeState, count: int, prompts, limits: list[int],
                     stopped: dict[int, int], stops: list[list[str]]) -> list[Completion]:
        stop_ids = set(np.asarray(self.stop_ids).tolist())
        tokens = np.asarray(decode.tokens)
        logprobs = np.asarray(decode.logprobs) if decode.logprobs.shape[1] else None
        top_ids, top_values = np.asarray(decode.top_ids), np.asarray(decode.top_logprobs)
        results = []
        for row, prompt in enumerate(prompts):
            new = tokens[row, :min(count, limits[row])].tolist()
            end = next((i for i, t in enumerate(new) if t in stop_ids), None)
            reason = "length"
            if end is not None:
                new, reason = new[:end + 1], "eos"
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if row in stopped:
                new = self._through_stop_string(new, stops[row])
                text, reason = text[:stopped[row]], "stop_string"
            completion = Completion(text, new, reason, len(prompt))
            if logprobs is not None:
                completion.logprobs = logprobs[row, :len(new)].tolist()
                completion.top_logprobs = [
                    list(zip(top_ids[row, i].tolist(), top_values[row, i].tolist()))
                    for i in range(len(new))]
            results.append(completion)
        return results

    def _through_stop_string(self, tokens: list[int], strings: list[str]) -> list[int]:
        """The shortest prefix of `tokens` whose text contains a stop string."""
        for end in range(1, len(tokens) + 1):
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
            if any(s in text for s in strings):
                return tokens[:end]
        return tokens
