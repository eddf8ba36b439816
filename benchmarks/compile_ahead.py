"""Compiling a bucketed run's train-step programs one at a time against several at once
(issue 39: the compile-ahead lever), each side in fresh processes, interleaved.

    python benchmarks/compile_ahead.py [--workers 2] [--rounds 3] [--steps 300]

The programs are those of benchmarks/run.py's GU run (experiments/xcopa-e5.yaml,
multilingual-e5-small, Pfeiffer rf 16, `data.length_buckets: fit` with grouping 50, batch 16):
one per batch shape its batches bring. One process compiles them with 1 thread (as when each
compiles on its first batch), the other with `--workers` (`TrainProgram.precompile`, as
`jaxcult train` does before its first step); tracing and lowering are included on both sides.
Prints the medians and the 1-minute load average. Needs ../shared/data (copa/, xcopa/).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def compile_once(workers: int, steps: int) -> None:
    """In this process: build the run and compile its step programs with `workers` threads."""
    import jax

    from jaxcult.config_loading import load_config
    from jaxcult.run.build import build_run
    from jaxcult.run.single import open_session
    from jaxcult.sharding import activation_rules, make_mesh

    config = load_config(ROOT / "experiments" / "xcopa-e5.yaml", [
        f"data.manual_dir={DATA}", "schedule.name=gu", "trainer.epochs=null",
        f"trainer.steps={steps}", "trainer.batch_size=16", "data.length_buckets=fit",
        "data.length_grouping=50"])
    mesh = make_mesh(config.mesh)
    with jax.set_mesh(mesh), activation_rules(config.mesh.rules):
        session = open_session(config, build_run(config, mesh), mesh)
        loop = session.loop
        batches = [loop.place(batch) for batch in session.iterator.shape_samples(0, loop.steps)]
        start = time.perf_counter()
        session.program.precompile(loop.state, loop.frozen, batches, workers)
        print(f"RESULT {len(batches)} {time.perf_counter() - start:.2f}", flush=True)


def measure(workers: int, steps: int) -> tuple[int, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(workers), "--steps", str(steps)],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "JAXCULT_COMPILATION_CACHE": "off"})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"compiling with {workers} thread(s) failed:\n{out.stderr[-3000:]}")
    programs, seconds = line.split()[1:]
    return int(programs), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return compile_once(args.child, args.steps)
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark needs the COPA and XCOPA files")
    load_before = os.getloadavg()[0]
    times: dict[int, list[float]] = {1: [], args.workers: []}
    for _ in range(args.rounds):
        for workers in times:
            programs, seconds = measure(workers, args.steps)
            times[workers].append(seconds)
    one, several = (statistics.median(t) for t in times.values())
    print(f"{programs} train-step programs (GU, COPA fitted buckets); medians of {args.rounds} "
          f"interleaved rounds, a fresh process each")
    print(f"one at a time: {one:.1f} s; {args.workers} at a time: {several:.1f} s; "
          f"speed-up {one / several:.2f}x")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
