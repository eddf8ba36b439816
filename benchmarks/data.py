"""Input pipeline throughput vs the rate the trainer consumes batches, for the default experiment.

    python benchmarks/data.py [--batches 300] [--steps 40]

Measures batches/s of the training iterators (in-process, grain with threads, grain with 2
worker processes) over the default experiment's tokenised training split, then trains the
default experiment for a few steps and reads its steps/s from metrics.jsonl (after the first,
compiling, interval). A ratio above 1 means the pipeline produces batches faster than the train
step consumes them. Both are measured in the same run; read the ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rate(iterator, count: int) -> float:
    for _ in range(5):  # warm-up: thread / worker start
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from jaxcult.config_loading import load_config
    from jaxcult.data.batching import BatchIterator
    from jaxcult.data.pipeline import GrainBatches
    from jaxcult.run.build import build_run
    from jaxcult.run.train import train
    from jaxcult.rundir import check_writable

    config = load_config(HERE.parent / "experiments" / "default.yaml")
    data = build_run(config).data
    size, seed = config.trainer.batch_size, config.trainer.seed
    loaders = {"in-process": BatchIterator(data.train, size, seed),
               "grain (threads)": GrainBatches(data.train, size, seed),
               "grain (2 workers)": GrainBatches(data.train, size, seed, worker_count=2)}
    rates = {}
    for name, iterator in loaders.items():
        rates[name] = rate(iterator, args.batches)
        iterator.close()
    with tempfile.TemporaryDirectory() as tmp:
        short = load_config(HERE.parent / "experiments" / "default.yaml",
                            [f"trainer.steps={args.steps}", "trainer.log_every=10",
                             "trainer.eval_every=0", "data.max_eval_examples=16",
                             "fisher.track_every=0", "logging.tensorboard=false",
                             "logging.progress=off"])
        run = check_writable(Path(tmp) / "run", overwrite=False, resume=False)
        train(short, run)
        rows = [json.loads(x) for x in (run.root / "metrics.jsonl").read_text().splitlines()]
        step_rates = [r["steps_per_second"] for r in rows if r["split"] == "train"][1:]
    consumed = statistics.median(step_rates)
    print(f"\ntrainer (default experiment, batch {size}): {consumed:.2f} steps/s", file=sys.stderr)
    for name, value in rates.items():
        print(f"{name:18} {value:9.1f} batches/s   pipeline/train ratio {value / consumed:8.1f}x")


if __name__ == "__main__":
    main()
