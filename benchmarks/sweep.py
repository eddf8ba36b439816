"""Vectorised seeds vs seeds one after another: the same multi-seed cell trained twice, as
`jaxcult train CONFIG trainer.seeds=[0..N-1]` with `trainer.vectorize_seeds` true and false,
each a whole process (imports, model loads, training, evaluation), interleaved over rounds.

    python benchmarks/sweep.py [--config experiments/default.yaml] [--seeds 4] [--steps 60]
                               [--rounds 1] [overrides ...]

Prints wall time and peak resident memory (`/usr/bin/time`) of both and their ratios, and checks
that every seed's scores agree. Read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args, vectorize: bool, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one multi-seed run."""
    seeds = ",".join(str(s) for s in range(args.seeds))
    command = ["/usr/bin/time", "-f", "maxrss_kib=%M", sys.executable, "-m", "jaxcult.cli", "train",
               args.config, "--run-dir", str(out), f"trainer.seeds=[{seeds}]",
               f"trainer.vectorize_seeds={str(vectorize).lower()}", "logging.tensorboard=false",
               "logging.progress=off", *([f"trainer.steps={args.steps}"] if args.steps else []),
               *args.overrides]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    rss = int(re.findall(r"maxrss_kib=(\d+)", done.stderr)[-1]) / 1024
    return wall, rss


def scores(out: Path, seeds: int) -> list[float]:
    return [json.loads((out / f"seed-{s}" / "summary.json").read_text())
            ["average_excluding_source"]["accuracy"] for s in range(seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/default.yaml")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60, help="0: the config's own")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"vectorised": [], "sequential": []}
    memory: dict[str, list[float]] = {"vectorised": [], "sequential": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            found = {}
            for name, vectorize in (("vectorised", True), ("sequential", False)):
                out = Path(scratch) / f"{name}-{round_}"
                wall, rss = run(args, vectorize, out)
                times[name].append(wall)
                memory[name].append(rss)
                found[name] = scores(out, args.seeds)
                print(f"round {round_}: {name:<10} {wall:7.1f} s  peak RSS {rss:7.0f} MiB  "
                      f"target averages {[round(100 * v, 2) for v in found[name]]}", flush=True)
            worst = max(abs(a - b) for a, b in zip(found["vectorised"], found["sequential"]))
            print(f"round {round_}: largest per-seed score difference {100 * worst:.4f} points")
    wall = {k: statistics.median(v) for k, v in times.items()}
    rss = {k: statistics.median(v) for k, v in memory.items()}
    print(f"\n{args.seeds} seeds of {args.config} ({args.steps or 'config'} steps), median of "
          f"{args.rounds} round(s):")
    print(f"  wall time   vectorised {wall['vectorised']:.1f} s, sequential {wall['sequential']:.1f} s, "
          f"ratio {wall['vectorised'] / wall['sequential']:.2f}x")
    print(f"  peak memory vectorised {rss['vectorised']:.0f} MiB, sequential {rss['sequential']:.0f} MiB, "
          f"ratio {rss['vectorised'] / rss['sequential']:.2f}x")


if __name__ == "__main__":
    main()
