"""Evaluation batching before and after its levers (issue 39): the same XCOPA splits scored by
the same evaluation step, the two sides interleaved in one process.

    python benchmarks/eval_order.py [--lever order|buckets] [--examples 100] [--rounds 3] [--batch 64]

Levers:
  order    before: examples in split order, batches of `--batch` rows (the last one padded
           with copies of row 0), each cut to the length bucket of its longest example.
           After (`eval_batches`): the examples longest first, spread evenly over as many
           batches (rows rounded up to 8), each cut to its bucket.
  buckets  both sides `eval_batches`; before: the evaluated splits cut to the lengths fitted
           to the training examples (a batch whose longest example is longer than all of
           them takes the splits' padded length); after: to the lengths fitted to the
           evaluation batches themselves (`data.batching.eval_batch_lengths`).

The run is benchmarks/run.py's (experiments/xcopa-e5.yaml, multilingual-e5-small, Pfeiffer
rf 16, `data.length_buckets: fit`), scoring the untrained adapters on the validation split and
every XCOPA language. Prints each side's first pass (compiling its programs), the median of the
timed rounds, the tokens each computes (rows x bucket, both choices) and the lengths it uses,
that both give every language the same accuracy, and the 1-minute load average. Needs
../shared/data.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

from jaxcult.config_loading import load_config
from jaxcult.data.batching import Split, eval_batches
from jaxcult.run.build import build_run
from jaxcult.run.single import open_session
from jaxcult.sharding import activation_rules, make_mesh
from jaxcult.trainers import evaluation

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def in_order_batches(split: Split, batch_size: int):
    """Evaluation batches as before the lever: split order, `batch_size` rows each."""
    n = len(split)
    for start in range(0, n, batch_size):
        examples = np.arange(start, min(start + batch_size, n))
        valid = np.arange(batch_size) < len(examples)
        index = np.concatenate([examples, np.zeros(batch_size - len(examples), examples.dtype)])
        yield split.take(index, examples), valid, examples


@contextlib.contextmanager
def batching(batches) -> Iterator[None]:
    adopted = evaluation.eval_batches
    evaluation.eval_batches = batches
    try:
        yield
    finally:
        evaluation.eval_batches = adopted


def tokens(batches, splits: dict[str, Split], batch_size: int) -> tuple[int, list[int]]:
    """Tokens computed (rows x length, every choice) and the distinct lengths used."""
    shapes = [batch["attention_mask"].shape for split in splits.values()
              for batch, _, _ in batches(split, batch_size)]
    return sum(int(np.prod(shape)) for shape in shapes), sorted({shape[-1] for shape in shapes})


Side = tuple[Callable, dict[str, Split]]


def sides_of(lever: str, splits: dict[str, Split], train: Split) -> dict[str, Side]:
    """Each side's batching and splits; `order` keeps the adopted buckets on both sides."""
    if lever == "order":
        return {"before (split order)": (in_order_batches, splits),
                "after (eval_batches)": (eval_batches, splits)}
    trained = {name: replace(split, buckets=train.buckets) for name, split in splits.items()}
    return {"before (training's lengths)": (eval_batches, trained),
            "after (evaluation's lengths)": (eval_batches, splits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lever", choices=("order", "buckets"), default="buckets")
    parser.add_argument("--examples", type=int, default=100, help="per language (data.max_eval_examples)")
    parser.add_argument("--batch", type=int, default=64, help="trainer.eval_batch_size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark needs the COPA and XCOPA files")
    config = load_config(ROOT / "experiments" / "xcopa-e5.yaml", [
        f"data.manual_dir={DATA}", "schedule.name=standard", "trainer.epochs=null",
        "trainer.steps=1", f"data.max_eval_examples={args.examples}", "data.length_buckets=fit",
        f"trainer.eval_batch_size={args.batch}"])
    mesh = make_mesh(config.mesh)
    with jax.set_mesh(mesh), activation_rules(config.mesh.rules):
        built = build_run(config, mesh)
        session = open_session(config, built, mesh)
        splits = {"validation": built.data.validation, **built.data.tests}
        sides = sides_of(args.lever, splits, built.data.train)
        params, frozen = session.loop.state.params, session.loop.frozen

        def score(batches, scored: dict[str, Split]) -> dict[str, float]:
            with batching(batches):
                return {language: evaluation.evaluate(session.program.model, params, frozen, split,
                                                      args.batch)["accuracy"]
                        for language, split in scored.items()}

        load_before = os.getloadavg()[0]
        first, times, scores = {}, {name: [] for name in sides}, {}
        for name, side in sides.items():
            start = time.perf_counter()
            scores[name] = score(*side)
            first[name] = time.perf_counter() - start
        for _ in range(args.rounds):
            for name, side in sides.items():
                start = time.perf_counter()
                score(*side)
                times[name].append(time.perf_counter() - start)
    print(f"evaluation of {len(splits)} splits x {args.examples} examples, batch {args.batch}; "
          f"e5-small Pfeiffer rf16, fitted buckets; lever {args.lever}; medians of {args.rounds} "
          f"interleaved rounds")
    for name, (batches, scored) in sides.items():
        computed, lengths = tokens(batches, scored, args.batch)
        print(f"{name}: first pass {first[name]:.1f} s, then {statistics.median(times[name]):.2f} s; "
              f"{computed} tokens computed, lengths {lengths}")
    before, after = (statistics.median(t) for t in times.values())
    before_scores, after_scores = scores.values()
    print(f"speed-up {before / after:.2f}x; same accuracy on every split: "
          f"{before_scores == after_scores}")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
