"""COPA -> XCOPA with multilingual-e5-small under several schedules; prints per-language accuracy.

    python scripts/xcopa_schedules.py [--data ../shared/data] [--schedules standard gu fun]
                                      [--out runs/xcopa] [extra overrides ...]

Each schedule is a normal `jaxcult train experiments/xcopa-e5.yaml` run (its run directory holds
every detail); the table at the end lists test accuracy per language and the average without
English.
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
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--schedules", nargs="+", default=["standard", "gu", "fun"])
    parser.add_argument("--out", default="runs/xcopa")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    summaries = {}
    for name in args.schedules:
        run_dir = Path(args.out) / name
        command = [sys.executable, "-m", "jaxcult.cli", "train", str(REPO / "experiments" / "xcopa-e5.yaml"),
                   "--run-dir", str(run_dir), "--overwrite", f"schedule.name={name}",
                   f"data.manual_dir={args.data}", *args.overrides]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        summaries[name] = json.loads((run_dir / "summary.json").read_text())
    languages = list(next(iter(summaries.values()))["metrics"])
    print("\n| schedule | " + " | ".join(languages) + " | avg (no en) |")
    print("|---" * (len(languages) + 2) + "|")
    for name, summary in summaries.items():
        cells = [f"{100 * summary['metrics'][lang]['accuracy']:.1f}" for lang in languages]
        avg = 100 * summary["average_excluding_source"]["accuracy"]
        print(f"| {name} | " + " | ".join(cells) + f" | {avg:.1f} |")


if __name__ == "__main__":
    main()
