"""Forward throughput (tokens/s): jaxcult vs transformers PyTorch, same weights, batch and length.

    python benchmarks/forward.py [--batch 8] [--length 128] [--repeats 10]

Both run on the CPU in this process, interleaved round by round, so machine noise hits both;
the ratio (jaxcult / PyTorch) is what to read, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from jaxcult import assets, load_pretrained
from jaxcult.hub.export import save_pretrained


def jax_forward(model, kind):
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, ids, mask):
        m = nnx.merge(graphdef, state)
        out = m(ids, mask)
        return out.last_hidden_state if kind == "encoder" else out.logits

    return lambda ids, mask: run(state, ids, mask).block_until_ready()


def hf_model(name, model, scratch):
    """The same weights in transformers (E5S1 has no HF loader: go through save_pretrained)."""
    path = assets.get_asset(name).path()
    if path.suffix == ".gguf":
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    if path.suffix == ".bin":
        path = save_pretrained(model, Path(scratch) / name)
    return transformers.AutoModel.from_pretrained(str(path)).eval()


def bench(name, kind, batch, length, repeats):
    model, _ = load_pretrained(name)
    with tempfile.TemporaryDirectory() as scratch:
        reference = hf_model(name, model, scratch)
    vocab = model.config.vocab_size
    ids = np.random.default_rng(0).integers(3, min(vocab, 30000), size=(batch, length))
    mask = np.ones_like(ids)
    ours = jax_forward(model, kind)
    jids, jmask = jnp.asarray(ids), jnp.asarray(mask)
    tids, tmask = torch.tensor(ids), torch.tensor(mask)
    ours(jids, jmask)  # compile
    with torch.no_grad():
        reference(input_ids=tids, attention_mask=tmask)
    times = {"jaxcult": [], "pytorch": []}
    for _ in range(repeats):
        start = time.perf_counter()
        ours(jids, jmask)
        times["jaxcult"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            reference(input_ids=tids, attention_mask=tmask)
        times["pytorch"].append(time.perf_counter() - start)
    tokens = batch * length
    rates = {k: tokens / statistics.median(v) for k, v in times.items()}
    print(f"{name:24} {kind:8} batch {batch} len {length}: jaxcult {rates['jaxcult']:9.0f} tok/s, "
          f"pytorch {rates['pytorch']:9.0f} tok/s, ratio {rates['jaxcult'] / rates['pytorch']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, jax devices {jax.devices()}")
    bench("minilm-l6", "encoder", args.batch, args.length, args.repeats)
    bench("multilingual-e5-small", "encoder", args.batch, args.length, args.repeats)
    bench("smollm2-135m-instruct", "decoder", args.batch, args.length, args.repeats)


if __name__ == "__main__":
    main()
