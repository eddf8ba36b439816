"""Offline MAD-X demo: train language adapters for three languages of the built-in dataset by
masked language modelling on their unlabelled sentences, export them in AdapterHub's format,
then run the default experiment with them stacked under the task adapters (MAD-X transfer)
beside the same run without them.

    python scripts/madx_demo.py [--out runs/madx-demo] [--languages en,de,zh] [--steps 100]

Run from the repository root (experiments/madx/transfer.yaml reads runs/madx-demo/adapters/).
A language whose exported adapter exists is not retrained; finished runs are not rerun. Needs
the multilingual-e5-small asset. Prints the per-language accuracies of both runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxcult.cli import main as jaxcult

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def run(*args: str) -> None:
    print("+ jaxcult", " ".join(args), flush=True)
    if jaxcult(list(args)) != 0:
        sys.exit(f"madx demo: `jaxcult {args[0]}` failed")


def train_once(run_dir: Path, *args: str) -> dict:
    """A run's summary, training it first unless it finished before."""
    if not (run_dir / "summary.json").is_file():
        run("train", *args, "--run-dir", str(run_dir), "--overwrite")
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/madx-demo"))
    parser.add_argument("--languages", default="en,de,zh")
    parser.add_argument("--steps", type=int, default=100, help="language-adapter training steps")
    args = parser.parse_args()
    languages = args.languages.split(",")
    if "en" not in languages:
        sys.exit("madx demo: --languages must include en (the source language)")
    started = time.perf_counter()
    adapters = {}
    for lang in languages:
        adapters[lang] = args.out / "adapters" / lang
        if not (adapters[lang] / "adapter_config.json").is_file():
            run_dir = args.out / f"language-adapter-{lang}"
            train_once(run_dir, str(EXPERIMENTS / "madx" / "language-adapter.yaml"),
                       f"data.source_language={lang}", f"data.target_languages=[{lang}]",
                       f"trainer.steps={args.steps}")
            run("export", str(run_dir), "--format", "adapterhub", "--name", lang,
                "--out", str(adapters[lang]), "--overwrite")
    mapping = "{" + ", ".join(f"{lang}: {path.resolve()}" for lang, path in adapters.items()) + "}"
    madx = train_once(args.out / "transfer", str(EXPERIMENTS / "madx" / "transfer.yaml"),
                      f"peft.language_adapters={mapping}")
    plain = train_once(args.out / "baseline", str(EXPERIMENTS / "default.yaml"))
    print(f"\n{'language':<10}{'adapter':>9}{'MAD-X':>9}{'baseline':>10}")
    for lang, metrics in madx["metrics"].items():
        has = "yes" if lang in adapters else "dropped"
        print(f"{lang:<10}{has:>9}{100 * metrics['accuracy']:>9.2f}"
              f"{100 * plain['metrics'][lang]['accuracy']:>10.2f}")
    print(f"madx demo: {time.perf_counter() - started:.0f} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
