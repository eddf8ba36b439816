"""`jaxcult clca STAGE CONFIG [KEY=VALUE ...]`: the CLCA pipeline, stage by stage or all.

Stages (each resumable, each writing JSONL with a provenance file into `--out`):
simulate -> `dialogues.jsonl`; judge -> `judged.jsonl`; annotate -> `annotated.jsonl` (kept
conversations only); build -> `data/<culture>/{train,validation}.jsonl`; train ->
`adapters/<train config stem>/<culture>/run` (a jaxcult run) and `.../peft` (the LoRA adapter
in PEFT format). `run` does all of them in order. `summary.json` collects each stage's counts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from jaxcult.clca.chat_model import ChatModel
from jaxcult.config_clca import ClcaConfig
from jaxcult.config_loading import load_section
from jaxcult.errors import UserError
from jaxcult.run import clca_stages
from jaxcult.run.clca_pipeline import Pipeline

STAGES = ("simulate", "judge", "annotate", "build", "train")


def run_stages(config_path: Path, overrides: list[str], stage: str, out: Path | None = None,
               models: dict[str, ChatModel] | None = None) -> dict:
    """Run `stage` (or every stage for `run`); returns the summary of the stages run."""
    if stage not in (*STAGES, "run"):
        raise UserError(f"clca: unknown stage {stage!r} (stages: {', '.join(STAGES)}, run)")
    config = load_section(ClcaConfig, config_path, overrides)
    out = out or Path("runs") / f"clca-{config.name}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    pipeline = Pipeline(config, config_path.resolve().parent, out, models)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clca.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                                   encoding="utf-8")
    done = {}
    for name in (STAGES if stage == "run" else (stage,)):
        started = time.perf_counter()
        done[name] = getattr(clca_stages, name)(pipeline)
        print(f"clca: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr,
              flush=True)
    return done
