"""CLCA (Liu, Korhonen, Gurevych, ACL 2025) as a recipe: cultural-learning dialogue data with a
local chat model — role-play simulation, judge filtering, intent annotation — and one LoRA
adapter per culture trained on the multi-view chats (docs/clca.md).

`jaxcult clca STAGE CONFIG [KEY=VALUE ...]`; stages (each resumable, each writing JSONL with a
provenance file into `--out`): simulate -> `dialogues.jsonl`; judge -> `judged.jsonl`; annotate
-> `annotated.jsonl` (kept conversations only); build -> `data/<culture>/{train,validation}.jsonl`;
train -> `adapters/<train config stem>/<culture>/run` (a jaxcult run) and `.../peft` (the LoRA
adapter in PEFT format). `run` does all of them in order; `summary.json` collects each stage's
facts. The stages are pure functions of their inputs and a `ChatModel` (a batch of chats in, a
batch of texts out), so they run on any jaxcult causal LM and are tested with scripted models.
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.clca.config import ClcaConfig

_STAGES = "jaxcult.recipes.clca.stages"

RECIPE = register_recipe(Recipe(
    name="clca",
    help="CLCA: simulate, judge and annotate cultural dialogues; train one LoRA adapter per "
         "culture",
    description="Cultural-learning dialogue data with a local chat model and per-culture LoRA "
                "fine-tuning (Liu et al., ACL 2025). Stages: simulate (role-play), judge "
                "(filter), annotate (intents), build (training views), train (adapters); `run` "
                "does all. Every stage resumes where it stopped. See docs/clca.md.",
    settings=ClcaConfig,
    stages=tuple(Stage(name, f"{_STAGES}:{name}") for name in
                 ("simulate", "judge", "annotate", "build", "train")),
    context="jaxcult.recipes.clca.pipeline:Pipeline",
    example="experiments/clca/demo.yaml",
))


def run_stages(config_path: Path, overrides: list[str], stage: str, out: Path | None = None,
               models: dict | None = None) -> dict:
    """Run `stage` (or every stage for `run`), with chat models already loaded by name
    (`models`, e.g. scripted ones in tests); returns each stage's facts."""
    from jaxcult.recipes.runner import run_recipe

    return run_recipe(RECIPE, stage, config_path, overrides, out, models=models)
