"""Surveys→Narratives (EMNLP 2025) as a recipe: per-culture LoRA adapters trained on survey
answers plus narrative culture text, then the cross-culture offensive-language matrix
(docs/cultural-eval.md).

`jaxcult narratives STAGE CONFIG [KEY=VALUE ...]`; stages (`run` does all three), everything
under `--out` and the scenario's name: build -> `data/<scenario>/<culture>/{train,validation}
.jsonl` (plain-text records; `combined/` too with `build.combined`); train ->
`adapters/<scenario>/<culture>/{run,peft}` (a jaxcult run and its PEFT adapter; finished runs
are skipped, interrupted ones resume); evaluate -> `evaluations/<scenario>/<row>.json` (and
`<row>.mmlu.json` with an `mmlu` section) per model row (reused when its settings are
unchanged), `matrix-<scenario>.{json,tsv,png}`, `mmlu-<scenario>.{json,tsv}`.
`summary.json` collects each stage's facts per scenario.
A build or train call whose sources, build settings or resolved training runs differ from
what made the folder's outputs is refused, naming the keys (`stages.json`).
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.narratives.config import NarrativesConfig

_STAGES = "jaxcult.recipes.narratives.stages"


def _provenance(name: str):
    def provenance(run) -> dict:
        from jaxcult.recipes.narratives import stages

        return getattr(stages, name)(run)
    return provenance


RECIPE = register_recipe(Recipe(
    name="narratives",
    help="Surveys→Narratives: per-culture LoRA adapters on survey answers and culture text; "
         "cross-culture matrix",
    description="Training views from survey answers, culture texts and NormAd stories, one LoRA "
                "adapter per culture, and every adapter on every culture's offensive-language "
                "tasks (macro-F1 matrix, C-Dist, heatmap) (EMNLP 2025). Stages: build, train, "
                "evaluate; `run` does all. See docs/cultural-eval.md.",
    settings=NarrativesConfig,
    stages=(Stage("build", f"{_STAGES}:build", provenance=_provenance("build_provenance")),
            Stage("train", f"{_STAGES}:train", provenance=_provenance("train_provenance")),
            Stage("evaluate", f"{_STAGES}:evaluate")),
    context=f"{_STAGES}:Narratives",
    example="experiments/narratives/paper.yaml",
    scope=lambda config: (config.build.scenario,),
    settings_file=lambda config: f"narratives-{config.build.scenario}.yaml",
))


def run_stages(config_path: Path, overrides: list[str], stage: str, out: Path | None = None) -> dict:
    """Run `stage` (or every stage for `run`); returns each stage's facts."""
    from jaxcult.recipes.runner import run_recipe

    return run_recipe(RECIPE, stage, config_path, overrides, out)
