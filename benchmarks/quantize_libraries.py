"""NF4 in jaxcult against qwix (the JAX quantisation library Tunix uses for QLoRA) on the same
kernel: values, bytes held, quantisation time, and dequantise + matmul time against a bfloat16
matmul. Interleaved rounds, medians; prints the machine load.

    pip install qwix && python benchmarks/quantize_libraries.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult.models.quant_formats import nf4_dequantize, nf4_quantize


def timed(fn, *args) -> float:
    """Seconds of one call, its result ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    try:
        import qwix
    except ImportError:
        raise SystemExit("qwix is not installed (pip install qwix)") from None
    rng = np.random.default_rng(0)
    kernel = jnp.asarray((rng.standard_normal((576, 1536)) * 0.05).astype(np.float32))  # (in, out)
    x = jnp.asarray(rng.standard_normal((1024, 576)).astype(np.float32)).astype(jnp.bfloat16)

    def theirs_quantize(w):
        return qwix.quantize(w, "nf4", tiled_axes={0: 64}, channelwise_axes=[1])

    ours_quantize = jax.jit(lambda w: nf4_quantize(w, 64, False))
    theirs_quantize = jax.jit(theirs_quantize)
    ours, theirs = ours_quantize(kernel), theirs_quantize(kernel)
    same = np.array_equal(np.asarray(nf4_dequantize(ours, 64)), np.asarray(qwix.dequantize(theirs)))
    programs = {
        "quantise: jaxcult": (ours_quantize, kernel), "quantise: qwix": (theirs_quantize, kernel),
        "matmul: bfloat16 kernel": (jax.jit(lambda x, w: x @ w), kernel.astype(jnp.bfloat16)),
        "dequantise+matmul: jaxcult": (jax.jit(lambda x, p: x @ nf4_dequantize(p, 64).astype(x.dtype)),
                                       ours),
        "dequantise+matmul: qwix": (jax.jit(lambda x, q: x @ qwix.dequantize(q).astype(x.dtype)), theirs),
    }
    def run(name: str) -> float:
        fn, arg = programs[name]
        return timed(fn, arg) if name.startswith("quantise") else timed(fn, x, arg)

    for name in programs:   # compile
        run(name)
    times = {name: [] for name in programs}
    for _ in range(args.rounds):
        for name in programs:
            times[name].append(run(name))
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds, medians")
    print(f"dequantised values identical: {same}; bytes held: jaxcult "
          f"{sum(v.nbytes for v in ours.values()):,}, qwix {theirs.qvalue.nbytes + theirs.scale.nbytes:,}")
    for name, values in times.items():
        print(f"  {name:<28} {statistics.median(values) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
