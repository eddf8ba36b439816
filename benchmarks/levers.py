"""Before/after figures for jaxcult's speed levers: the same train step with one lever switched
off and on, interleaved in one process on the same batches (issue 39: every lever adopted is
measured back to back).

    python benchmarks/levers.py [--lever dropout_masks] [--batch 32] [--length 64] [--steps 10] [--rounds 3]
                                [--dtype float32|bfloat16] [--fisher-batches 4]

Levers:
  dropout_masks     dropout keep-masks from `jaxcult.models.dropout_mask` (straight-line
                    threefry, bit-identical) against `jax.random.bernoulli` (XLA:CPU's rolled
                    threefry loop)
  float32_products  16-bit products accumulated in float32 with contraction dimensions
                    (`jaxcult.models.products`) against plain 16-bit `jnp.dot`; run it with
                    `--dtype bfloat16` (in float32 both sides are the same program)
  gelu              the erf GELU with its closed-form derivative (`jaxcult.models.gelu`)
                    against `jax.nn.gelu(approximate=False)` (erfc; XLA:CPU splits it into
                    three passes when differentiated)

The step is train_step.py's (multilingual-e5-small, Pfeiffer rf 16, dropout 0.1, truncated
backward), with every adapter trainable and with the top k, its evaluation step (forward
only) and its FUN check (the official estimator) over `--fisher-batches` batches (0: none).
Medians of the rounds, with the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from train_step import jaxcult_side

from jaxcult.models import layers


@contextlib.contextmanager
def jax_bernoulli_masks() -> Iterator[None]:
    """Dropout as before the lever: masks from `jax.random.bernoulli`."""
    adopted = layers.keep_mask
    layers.keep_mask = jax.random.bernoulli
    try:
        yield
    finally:
        layers.keep_mask = adopted


@contextlib.contextmanager
def plain_products() -> Iterator[None]:
    """Projections as before the lever: `jnp.dot` in the compute dtype, JAX's own transpose."""
    adopted = layers.matmul
    layers.matmul = lambda x, kernel, dtype: jnp.dot(x.astype(dtype), kernel.astype(dtype))
    try:
        yield
    finally:
        layers.matmul = adopted


@contextlib.contextmanager
def erfc_gelu() -> Iterator[None]:
    """The activation as before the lever: `jax.nn.gelu(approximate=False)`, taken by the
    models built inside the context."""
    adopted = layers.ACTIVATIONS["gelu"]
    layers.ACTIVATIONS["gelu"] = lambda x: jax.nn.gelu(x, approximate=False)
    try:
        yield
    finally:
        layers.ACTIVATIONS["gelu"] = adopted


LEVERS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "dropout_masks": jax_bernoulli_masks,
    "float32_products": plain_products,
    "gelu": erfc_gelu,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lever", choices=sorted(LEVERS), default="dropout_masks")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", default="1,3", help="top-k trainable settings besides all")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="model.dtype and model.compute_dtype of the step")
    parser.add_argument("--fisher-batches", type=int, default=4,
                        help="batches of the timed FUN check (0: no FUN check)")
    args = parser.parse_args()
    tops = [None, *(int(k) for k in args.top.split(",") if k)]
    checks = ["fun"] if args.fisher_batches else []
    args.fisher_batches = max(args.fisher_batches, 1)
    load_before = os.getloadavg()[0]
    # each side builds its model and traces (and compiles) its own programs; the "before" side
    # only ever runs inside the lever's context
    with LEVERS[args.lever]():
        before = jaxcult_side(args)
    after = jaxcult_side(args)
    times = {(side, work): [] for side in ("before", "after") for work in [*tops, "eval", *checks]}
    for _ in range(args.rounds):
        for top in tops:
            with LEVERS[args.lever]():
                times["before", top].append(before[2](args.steps, top))
            times["after", top].append(after[2](args.steps, top))
        with LEVERS[args.lever]():
            times["before", "eval"].append(before[5](args.steps))
        times["after", "eval"].append(after[5](args.steps))
        for check in checks:
            with LEVERS[args.lever]():
                times["before", check].append(before[3]())
            times["after", check].append(after[3]())
    print(f"lever {args.lever}: e5-small Pfeiffer rf16, {args.dtype}, dropout 0.1, batch {args.batch} x "
          f"{args.length}; medians of {args.rounds} interleaved rounds; load {load_before:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after")
    for top in tops:
        b, a = (statistics.median(times[side, top]) for side in ("before", "after"))
        name = "all" if top is None else f"top-{top}"
        print(f"  step, {name:5s} trainable: before {b * 1e3:6.0f} ms, after {a * 1e3:6.0f} ms, "
              f"speed-up {b / a:.2f}x")
    b, a = (statistics.median(times[side, "eval"]) for side in ("before", "after"))
    print(f"  evaluation step (forward):  before {b * 1e3:6.0f} ms, after {a * 1e3:6.0f} ms, "
          f"speed-up {b / a:.2f}x")
    for check in checks:
        b, a = (statistics.median(times[side, check]) for side in ("before", "after"))
        print(f"  FUN check ({args.fisher_batches} batches): before {b:.2f} s, after {a:.2f} s, "
              f"speed-up {b / a:.2f}x")


if __name__ == "__main__":
    main()
