"""Cultural commonsense knowledge graphs ("LLMs as Cultural Archives", EACL 2026, arXiv
2601.17971): a teacher model's "If [action], then [knowledge]" assertions per country,
language and subtopic, expanded into chains, merged by sentence similarity, and cut into
maximal paths.

`jaxcult cckg STAGE CONFIG [KEY=VALUE ...]`; stages (`run` does those the config has),
everything under `--out`: generate -> `generation.jsonl`; expand -> `expansion-<round>.jsonl`;
paths -> `assertions.jsonl`, `paths.jsonl`; adapt -> `adapt/` (per-country LoRA adapters on the
graph, Fisher traces); evaluate -> `evaluate/` (cultural multiple choice scored by option
log-probabilities and stories judged 1-10, with and without the graph's knowledge in the
prompt; `report.{json,md}`). See `jaxcult.recipes.cckg.stages`. Every model output is appended
a batch at a time (a killed stage continues) with a provenance file beside it.
"""

from __future__ import annotations

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.cckg.config import CckgConfig

_STAGES = "jaxcult.recipes.cckg.stages"


def _stages(config: CckgConfig) -> tuple[str, ...]:
    """The graph stages, then adapt and evaluate when the config has their sections."""
    optional = tuple(name for name in ("adapt", "evaluate") if getattr(config, name) is not None)
    return ("generate", "expand", "paths", *optional)

RECIPE = register_recipe(Recipe(
    name="cckg",
    help="cultural commonsense knowledge graphs: generate, expand and chain assertions",
    description="Ask a teacher model (local or remote) for if-then cultural assertions per "
                "country, language and subtopic (JSON, repaired when broken), expand next-step "
                "assertions into chains merging near-duplicate nodes by sentence-embedding "
                "similarity, and extract each subtopic's maximal paths; train per-country "
                "adapters on them; evaluate small models on cultural multiple choice and "
                "stories with retrieved assertions or paths in the prompt. `run` does the "
                "graph stages, then adapt and evaluate when the config has their sections.",
    settings=CckgConfig,
    stages=(Stage("generate", f"{_STAGES}:generate", "assertions per country/language/subtopic"),
            Stage("expand", f"{_STAGES}:expand", "chains from next-step assertions, nodes merged"),
            Stage("paths", f"{_STAGES}:paths", "cleaned assertions and maximal paths"),
            Stage("adapt", f"{_STAGES}:adapt", "per-country LoRA adapters on the graph"),
            Stage("evaluate", f"{_STAGES}:evaluate", "multiple choice and stories, report")),
    run_stages=_stages,
    context="jaxcult.recipes.cckg.context:Graphs",
    example="experiments/cckg/demo.yaml",
))
