"""Cultural commonsense knowledge graphs ("LLMs as Cultural Archives", EACL 2026, arXiv
2601.17971): a teacher model's "If [action], then [knowledge]" assertions per country,
language and subtopic, expanded into chains, merged by sentence similarity, and cut into
maximal paths.

`jaxcult cckg STAGE CONFIG [KEY=VALUE ...]`; stages (`run` does all), everything under `--out`:
generate -> `generation.jsonl`; expand -> `expansion-<round>.jsonl`; paths ->
`assertions.jsonl`, `paths.jsonl` (see `jaxcult.recipes.cckg.stages`). Every teacher output is
appended a batch at a time (a killed stage continues) with a provenance file beside it. The
evaluation stage (cultural multiple choice and story generation with retrieved chains) and
adapters trained on the chains are not built yet.
"""

from __future__ import annotations

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.cckg.config import CckgConfig

_STAGES = "jaxcult.recipes.cckg.stages"

RECIPE = register_recipe(Recipe(
    name="cckg",
    help="cultural commonsense knowledge graphs: generate, expand and chain assertions",
    description="Ask a teacher model (local or remote) for if-then cultural assertions per "
                "country, language and subtopic (JSON, repaired when broken), expand next-step "
                "assertions into chains merging near-duplicate nodes by sentence-embedding "
                "similarity, and extract each subtopic's maximal paths. Stages: generate, "
                "expand, paths; `run` does all.",
    settings=CckgConfig,
    stages=(Stage("generate", f"{_STAGES}:generate", "assertions per country/language/subtopic"),
            Stage("expand", f"{_STAGES}:expand", "chains from next-step assertions, nodes merged"),
            Stage("paths", f"{_STAGES}:paths", "cleaned assertions and maximal paths")),
    context=f"{_STAGES}:Graphs",
    example="experiments/cckg/demo.yaml",
))
