"""Run one experiment under several unfreezing schedules; print the per-language table.

    python scripts/compare_schedules.py experiments/xcopa-e5.yaml [--data ../shared/data]
        [--schedules standard gu fun] [--out runs/compare] [--overwrite] [overrides ...]

Each schedule is a normal `jaxcult train` run (its run directory holds every detail); the table
lists the task's primary metric (accuracy, F1, ...) per test language and the average over the
targets without the source language. A schedule whose run already finished in `--out` is
reused, not retrained; earlier runs are replaced only with `--overwrite`. A run that fails or is
interrupted stops the comparison with its exit status.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--schedules", nargs="+", default=["standard", "gu", "fun"])
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--overwrite", action="store_true", help="retrain and replace earlier runs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    summaries = {}
    for name in args.schedules:
        run_dir = Path(args.out) / name
        summary = run_dir / "summary.json"
        if summary.exists() and not args.overwrite:
            print(f"{run_dir}: finished earlier, reused (--overwrite retrains)", flush=True)
        else:
            command = [sys.executable, "-m", "jaxcult.cli", "train", args.experiment,
                       "--run-dir", str(run_dir), *(["--overwrite"] if args.overwrite else []),
                       f"schedule.name={name}", f"data.manual_dir={args.data}", *args.overrides]
            print("+", " ".join(command), flush=True)
            status = subprocess.run(command).returncode
            if status != 0:
                sys.exit(f"{run_dir}: jaxcult train exited {status}; nothing compared")
        summaries[name] = json.loads(summary.read_text())
    first = next(iter(summaries.values()))
    metric, languages = first["primary_metric"], list(first["metrics"])
    print(f"\n{metric} (%)\n| schedule | " + " | ".join(languages) + " | avg (no source) |")
    print("|---" * (len(languages) + 2) + "|")
    for name, summary in summaries.items():
        cells = [f"{100 * summary['metrics'][lang][metric]:.1f}" for lang in languages]
        average = 100 * summary["average_excluding_source"][metric]
        print(f"| {name} | " + " | ".join(cells) + f" | {average:.1f} |")


if __name__ == "__main__":
    main()
