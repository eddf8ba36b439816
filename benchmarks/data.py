"""Input pipeline throughput vs the rate the trainer consumes batches.

    python benchmarks/data.py [--batches 300] [--steps 40] [--manual-dir ../shared/data]

1. The default experiment (in-memory split): batches/s of the in-process iterator and of grain
   with threads and with 2 worker processes, against the default run's train steps/s.
2. A prepared dataset (`data.source: tfds`, XCOPA prepared into a temporary folder from
   --manual-dir, skipped when it has no copa/ and xcopa/): batches/s of records read from the
   array_record files and tokenised batch by batch with 0, 1 and 2 grain worker processes,
   against experiments/xcopa-e5.yaml's train steps/s.

Steps/s come from each run's metrics.jsonl (after the first, compiling, interval). A ratio
above 1 means the pipeline produces batches faster than the train step consumes them. Both are
measured in the same run; read the ratios, not absolute times.
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
EXPERIMENTS = HERE.parent / "experiments"


def rate(iterator, count: int) -> float:
    for _ in range(5):  # warm-up: thread / worker start
        next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


def loader_rates(loaders: dict, count: int) -> dict[str, float]:
    rates = {}
    for name, iterator in loaders.items():
        rates[name] = rate(iterator, count)
        iterator.close()
    return rates


def train_rate(config_path: Path, overrides: list[str], steps: int) -> float:
    """Median train steps/s of a short run of `config_path`."""
    from jaxcult.config_loading import load_config
    from jaxcult.run.train import train
    from jaxcult.rundir import check_writable

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(config_path, [*overrides, "trainer.epochs=null", f"trainer.steps={steps}",
                                           "trainer.log_every=10", "trainer.eval_every=0",
                                           "data.max_eval_examples=16", "fisher.track_every=0",
                                           "logging.tensorboard=false", "logging.progress=off"])
        run = check_writable(Path(tmp) / "run", overwrite=False, resume=False)
        train(config, run)
        rows = [json.loads(x) for x in (run.root / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["steps_per_second"] for r in rows if r["split"] == "train")


def report(title: str, rates: dict[str, float], consumed: float) -> None:
    print(f"\n{title}: trainer {consumed:.2f} steps/s")
    for name, value in rates.items():
        print(f"  {name:24} {value:9.1f} batches/s   pipeline/train ratio {value / consumed:8.1f}x")


def in_memory(args) -> None:
    from jaxcult.config_loading import load_config
    from jaxcult.data.batching import BatchIterator
    from jaxcult.data.pipeline import GrainBatches
    from jaxcult.run.build import build_run

    config = load_config(EXPERIMENTS / "default.yaml")
    data = build_run(config).data
    size, seed = config.trainer.batch_size, config.trainer.seed
    rates = loader_rates({"in-process": BatchIterator(data.train, size, seed),
                          "grain (threads)": GrainBatches(data.train, size, seed),
                          "grain (2 workers)": GrainBatches(data.train, size, seed, worker_count=2)},
                         args.batches)
    report(f"default experiment, in memory, batch {size}", rates,
           train_rate(EXPERIMENTS / "default.yaml", [], args.steps))


def prepared(args) -> None:
    from jaxcult.config_loading import load_config
    from jaxcult.data import tfds as jt
    from jaxcult.data.pipeline import GrainBatches
    from jaxcult.run.build import load_task_data, resolve_plugins, tokenizer_of

    if not (args.manual_dir / "copa").is_dir() or not (args.manual_dir / "xcopa").is_dir():
        print(f"\nprepared source: skipped ({args.manual_dir} has no copa/ and xcopa/)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        jt.prepare("jaxcult:xcopa", data_dir=tmp, manual_dir=args.manual_dir)
        overrides = [f"data.data_dir={tmp}", "data.source=tfds", "data.max_eval_examples=16"]
        config = load_config(EXPERIMENTS / "xcopa-e5.yaml", overrides)
        plugins, dataset = resolve_plugins(config)
        train = load_task_data(config, plugins.task, dataset, tokenizer_of(config)).train
        size, seed = config.trainer.batch_size, config.trainer.seed
        rates = loader_rates({f"prepared, {n} workers": GrainBatches(train, size, seed,
                                                                      worker_count=n)
                              for n in (0, 1, 2)}, args.batches)
        consumed = train_rate(EXPERIMENTS / "xcopa-e5.yaml", overrides, args.steps)
    report(f"xcopa-e5, prepared (array_record, tokenised per batch), batch {size}", rates, consumed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--manual-dir", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    in_memory(args)
    prepared(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
