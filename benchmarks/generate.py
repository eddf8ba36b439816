"""Generation speed: jaxcult's engine vs transformers' `generate` on SmolLM2-135M-Instruct (CPU).

    python benchmarks/generate.py [--new-tokens 32] [--rounds 3] [--file-prompts 64]

Both sides load the same GGUF asset (dequantised to float32), decode greedily the same chat
prompts with the same number of new tokens (EOS disabled on both sides, so every row runs to
the limit), and alternate rounds so machine noise hits both. Prints new tokens/s at batch 1
and batch 8, time to first token, and prompts/s for a file of chat prompts of mixed lengths
(transformers: batches of 8 in file order, left-padded, as a user would run it).

Batch-1 decoding reads every weight once per token, so it is bounded by memory bandwidth: the
script measures this machine's read bandwidth (a sum over a 256 MiB float32 array, far larger
than the caches) and reports each side's batch-1 rate as a fraction of the ceiling it implies
(bandwidth / weight bytes per token).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
from flax import nnx

from jaxcult import assets, load_pretrained
from jaxcult.config import GenerationConfig
from jaxcult.generation import Generator, generate_ids
from jaxcult.generation.prompts import encode

TOPICS = ["the capital of France", "how rain forms", "a good breakfast", "learning a language",
          "the history of tea", "why the sky is blue", "a short poem about autumn", "chess openings",
          "how to bake bread", "the moon landing", "saving money", "how bees make honey"]


def chat_prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"Tell me about {TOPICS[i % len(TOPICS)]}." + " Please be detailed." * int(rng.integers(0, 8))
            for i in range(n)]


def hf_side(path, tokenizer, torch):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer.padding_side = "left"

    def run(texts: list[str], new_tokens: int) -> None:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
    return run


def read_bandwidth(rounds: int = 5) -> float:
    """Bytes/s a jitted sum reads from a 256 MiB float32 array (medians of `rounds`)."""
    array = jax.numpy.ones(64 * 1024 * 1024, jax.numpy.float32)
    total = jax.jit(lambda a: a.sum())
    total(array).block_until_ready()
    return array.nbytes / statistics.median(timed(lambda: total(array).block_until_ready())
                                            for _ in range(rounds))


def weight_bytes(model) -> int:
    """Bytes of the parameters a decode step reads (every weight matrix, the tied embedding
    once as the output projection)."""
    return sum(leaf.nbytes for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file-prompts", type=int, default=64)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    import torch

    torch.set_num_threads(2)
    path = assets.get_asset("smollm2-135m-instruct").path()
    model, tokenizer = load_pretrained(path)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True)
             for p in chat_prompts(args.file_prompts)]
    ids = encode(chat_prompts(args.file_prompts), tokenizer, chat=True)
    hf_run = hf_side(path, tokenizer, torch)
    buckets = [48, 64, 72]  # the 64 prompts have 36-67 tokens
    never = dict(stop_token_ids=[], length_buckets=buckets)
    engines = {b: Generator(model, _NoEos(tokenizer), GenerationConfig(
        max_new_tokens=args.new_tokens, batch_size=b, chunk=args.new_tokens, **never)) for b in (1, 8)}
    first_token = {b: Generator(model, _NoEos(tokenizer), GenerationConfig(
        max_new_tokens=1, batch_size=b, **never)) for b in (1, 8)}
    for b, engine in engines.items():  # compile outside the timings
        engine.run_batch(ids[:b])
        first_token[b].run_batch(ids[:b])
        hf_run(texts[:b], 1)
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for b in (1, 8):
            rows.setdefault(f"jaxcult batch {b}", []).append(timed(engines[b].run_batch, ids[:b]))
            rows.setdefault(f"hf batch {b}", []).append(timed(hf_run, texts[:b], args.new_tokens))
            rows.setdefault(f"jaxcult ttft {b}", []).append(timed(first_token[b].run_batch, ids[:b]))
            rows.setdefault(f"hf ttft {b}", []).append(timed(hf_run, texts[:b], 1))
        rows.setdefault("jaxcult file", []).append(timed(generate_ids, engines[8], ids))
        rows.setdefault("hf file", []).append(timed(
            lambda: [hf_run(texts[i:i + 8], args.new_tokens) for i in range(0, len(texts), 8)]))
    t = {k: statistics.median(v) for k, v in rows.items()}
    bandwidth = read_bandwidth()
    ceiling = bandwidth / weight_bytes(model)
    print(f"SmolLM2-135M-Instruct (GGUF -> float32), greedy, {args.new_tokens} new tokens, CPU; "
          f"medians of {args.rounds} interleaved rounds; load {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    for b in (1, 8):
        ours, theirs = b * args.new_tokens / t[f"jaxcult batch {b}"], b * args.new_tokens / t[f"hf batch {b}"]
        print(f"batch {b}: jaxcult {ours:.1f} tokens/s, transformers {theirs:.1f} tokens/s, "
              f"ratio {ours / theirs:.2f}x; time to first token {t[f'jaxcult ttft {b}'] * 1e3:.0f} ms "
              f"vs {t[f'hf ttft {b}'] * 1e3:.0f} ms")
    decode = {side: (args.new_tokens - 1) / (t[f"{side} batch 1"] - t[f"{side} ttft 1"])
              for side in ("jaxcult", "hf")}
    print(f"bandwidth ceiling at batch 1: {weight_bytes(model) / 1e6:.0f} MB of weights per token, "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s -> {ceiling:.1f} tokens/s; decoding after the "
          f"first token: jaxcult {decode['jaxcult']:.1f} tokens/s "
          f"({100 * decode['jaxcult'] / ceiling:.0f}%), "
          f"transformers {decode['hf']:.1f} ({100 * decode['hf'] / ceiling:.0f}%)")
    n = len(ids)
    print(f"file of {n} chat prompts: jaxcult {n / t['jaxcult file']:.2f} prompts/s, transformers "
          f"{n / t['hf file']:.2f} prompts/s, ratio {t['hf file'] / t['jaxcult file']:.2f}x")


class _NoEos:
    """The tokenizer with EOS hidden, so both sides always generate the full length."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id = None
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def decode(self, ids, skip_special_tokens=True):
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


if __name__ == "__main__":
    main()
