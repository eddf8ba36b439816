"""Offline demo of survey evaluation: the smollm2-135m-instruct asset on synthetic
WorldValuesBench-layout data for two cultures, in generate and log-prob mode.

    python scripts/survey_demo.py [--out runs/survey-demo] [--personas 5]

Needs the asset (`jaxcult assets install smollm2-135m-instruct`). The data are synthetic
(jaxcult.data.survey_synthetic): the numbers show the pipeline, not the model's cultural
alignment. Each mode's outputs land in OUT/<mode>/ (docs/cultural-eval.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from jaxcult.data.survey_synthetic import write_synthetic_worldvaluesbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/survey-demo"))
    parser.add_argument("--personas", type=int, default=3)
    args = parser.parse_args()
    data = write_synthetic_worldvaluesbench(args.out / "data", ("China", "Germany"), respondents=200)
    for mode in ("generate", "logprob"):
        started = time.perf_counter()
        command = [sys.executable, "-m", "jaxcult.cli", "eval-survey", "smollm2-135m-instruct",
                   "--survey", str(data), "--culture", "China", "--culture", "Germany",
                   "--personas", str(args.personas), "--mode", mode, "--out", str(args.out / mode),
                   "batch_size=16", "length_buckets=[192,256]",
                   "max_new_tokens=16"]  # a demo's budget; the official protocol decodes up to 500
        print("+", " ".join(command), flush=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"eval-survey ({mode}) failed")
        print(f"{mode}: {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
