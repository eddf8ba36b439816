"""`jaxcult clca STAGE CONFIG [KEY=VALUE ...]`: the CLCA pipeline, stage by stage or all.

Stages (each resumable, each writing JSONL with a provenance file into `--out`):
simulate -> `dialogues.jsonl`; judge -> `judged.jsonl`; annotate -> `annotated.jsonl` (kept
conversations only); build -> `data/<culture>/{train,validation}.jsonl`; train ->
`adapters/<train config stem>/<culture>/run` (a jaxcult run) and `.../peft` (the LoRA adapter
in PEFT format). `run` does all of them in order. `summary.json` collects each stage's counts.
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.clca.chat_model import ChatModel
from jaxcult.config_clca import ClcaConfig
from jaxcult.run import clca_stages
from jaxcult.run.clca_pipeline import Pipeline
from jaxcult.run.stages import open_pipeline, run_in_order, write_settings

STAGES = ("simulate", "judge", "annotate", "build", "train")


def run_stages(config_path: Path, overrides: list[str], stage: str, out: Path | None = None,
               models: dict[str, ChatModel] | None = None) -> dict:
    """Run `stage` (or every stage for `run`); returns the summary of the stages run."""
    config, out = open_pipeline("clca", ClcaConfig, config_path, overrides, stage, STAGES, out)
    pipeline = Pipeline(config, config_path.resolve().parent, out, models)
    write_settings(config, out / "clca.yaml")
    return run_in_order("clca", stage, STAGES, lambda name: getattr(clca_stages, name)(pipeline))
