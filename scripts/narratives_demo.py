"""Offline demo of the Surveys→Narratives pipeline: synthetic survey, culture texts, NormAd
stories and offensive-language tasks for two cultures; one LoRA adapter per culture on the
smollm2-135m-instruct asset; the cross-culture macro-F1 matrix with C-Dist and its heatmap.

    python scripts/narratives_demo.py [--out runs/narratives-demo]

Needs the asset (`jaxcult assets install smollm2-135m-instruct`). The sources are synthetic
(jaxcult.data.survey_synthetic, jaxcult.data.narratives_synthetic): the numbers show the
pipeline, not a culture. Outputs in OUT (docs/cultural-eval.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from jaxcult.data.narratives_synthetic import write_synthetic_narratives
from jaxcult.data.survey_synthetic import write_synthetic_worldvaluesbench

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "narratives" / "demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/narratives-demo"))
    args = parser.parse_args()
    cultures = ("China", "Germany")
    data = args.out.resolve() / "sources"
    survey = write_synthetic_worldvaluesbench(data / "wvb", cultures, respondents=200)
    files = write_synthetic_narratives(data, cultures)
    command = [sys.executable, "-m", "jaxcult.cli", "narratives", "run", str(CONFIG),
               "--out", str(args.out), f"survey={survey}",
               *(f"{key}={path}" for key, path in files.items())]
    print("+", " ".join(command), flush=True)
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        sys.exit("narratives demo failed")
    print(f"narratives demo: {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
