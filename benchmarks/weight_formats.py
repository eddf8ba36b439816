"""Batch-1 matrix-vector products with the weights stored in float32, bfloat16 and int8 on
XLA (the decoding lever of issue 39: fewer weight bytes per token).

    python benchmarks/weight_formats.py [--matrices 90] [--rows 576] [--cols 1536] [--rounds 3]

Each variant multiplies one activation row by `--matrices` weight matrices (SmolLM2-135M's
MLP shape by default, ~320 MB in float32: far more than the caches) inside one jitted
function, converting the stored weights to float32 where they are narrower: as a conversion
before `x @ W`, and for int8 also as one fused multiply-reduce. Prints the median time of
the rounds and the rate at which the stored weights are read, with the load average. On a
backend that fuses the conversion into its matmul the narrow formats read fewer bytes; one
that materialises the converted matrix first reads more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def product_sum(x, weights, scales=None):
    """sum_i (x @ float32(W_i)) * scale_i, reduced to one number (nothing else to time)."""
    total = 0.0
    for index, w in enumerate(weights):
        y = x @ w.astype(jnp.float32)
        total = total + (y if scales is None else y * scales[index]).sum()
    return total


def fused_int8(x, weights, scales):
    """The same products as an elementwise multiply and a reduction over the input axis."""
    total = 0.0
    for w, s in zip(weights, scales):
        total = total + ((w.astype(jnp.float32) * x[0][:, None]).sum(0) * s).sum()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", type=int, default=90)
    parser.add_argument("--rows", type=int, default=576)
    parser.add_argument("--cols", type=int, default=1536)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    shape = (args.rows, args.cols)
    full = [jnp.asarray(rng.standard_normal(shape, np.float32)) for _ in range(args.matrices)]
    int8 = [jnp.asarray(rng.integers(-127, 128, shape).astype(np.int8)) for _ in range(args.matrices)]
    scales = [jnp.ones(args.cols, jnp.float32) for _ in range(args.matrices)]
    half = [w.astype(jnp.bfloat16) for w in full]
    x = jnp.ones((1, args.rows), jnp.float32)
    variants = {
        "float32, x @ W": (jax.jit(product_sum), (x, full), full),
        "bfloat16, converted, x @ W": (jax.jit(product_sum), (x, half), half),
        "int8 + scale, converted, x @ W": (jax.jit(product_sum), (x, int8, scales), int8),
        "int8 + scale, fused multiply-reduce": (jax.jit(fused_int8), (x, int8, scales), int8),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn, inputs, _ in variants.values():
        fn(*inputs).block_until_ready()   # compile outside the timings
    for _ in range(args.rounds):
        for name, (fn, inputs, _) in variants.items():
            start = time.perf_counter()
            for _ in range(args.repeats):
                fn(*inputs).block_until_ready()
            times[name].append((time.perf_counter() - start) / args.repeats)
    print(f"{args.matrices} matrices {args.rows} x {args.cols}, batch 1, {jax.devices()[0].platform}; "
          f"medians of {args.rounds} interleaved rounds; load {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    for name, (_, _, weights) in variants.items():
        seconds = statistics.median(times[name])
        stored = sum(w.nbytes for w in weights)
        print(f"  {name:38s} {seconds * 1e3:7.1f} ms, stored weights read at "
              f"{stored / seconds / 1e9:5.1f} GB/s")


if __name__ == "__main__":
    main()
