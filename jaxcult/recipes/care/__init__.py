"""Culturally sensitive emotional support (CultureCare, arXiv 2508.07902): prompting strategies,
a seven-metric log-probability judge, and adapters that go beyond prompting (docs/care.md).

`jaxcult care STAGE CONFIG [KEY=VALUE ...]`; stages (`run` does all but distill and prefer,
which need their config sections), everything under `--out`: read -> `posts-used.json` (the
annotation counts, the posts used, posts without text by id); generate -> `replies.jsonl`
(one reply per strategy and post; resumes by batch); judge -> `judgements.jsonl` (per reply,
each judge's seven metrics and normalised score; resumes by batch); distill and prefer ->
`distill/`, `prefer/` (an adapter per culture, its replies to held-out posts and their
judgements); report -> `report.{json,md}`, `plots/`. Every output has a provenance file
beside it; a later call with other settings is refused rather than mixing two experiments.

The released annotations point to Reddit posts, whose terms forbid training on them without
an agreement: jaxcult ships no post text, and the training stages refuse to run unless the
config states `posts_may_train: true`.
"""

from __future__ import annotations

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.care.config import CareConfig

_STAGES = "jaxcult.recipes.care.stages"


def _stages(config: CareConfig) -> tuple[str, ...]:
    return tuple(s for s in ("read", "generate", "judge", "distill", "prefer", "report")
                 if s not in ("distill", "prefer") or getattr(config, s) is not None)


RECIPE = register_recipe(Recipe(
    name="care",
    help="culturally sensitive emotional support: strategies, a 7-metric judge, adapters",
    description="Reply to distress posts under prompting strategies (baseline, culture "
                "role-play, counselling guidelines, the post's annotations, combined), judge "
                "every reply on seven metrics by the probability-weighted digit, train "
                "adapters that reply like the best strategy without its prompt (context "
                "distillation, preference training), and report culture × strategy tables "
                "with paired comparisons. Stages: read, generate, judge, distill, prefer, "
                "report; `run` does all that are configured. See docs/care.md.",
    settings=CareConfig,
    stages=(Stage("read", f"{_STAGES}:read", "count annotations; join the user's post texts"),
            Stage("generate", f"{_STAGES}:generate", "a reply per strategy and post"),
            Stage("judge", f"{_STAGES}:judge", "seven metrics per reply, per judge"),
            Stage("distill", "jaxcult.recipes.care.adapt:distill_adapters",
                  "adapters trained on the teacher's replies"),
            Stage("prefer", "jaxcult.recipes.care.adapt:preference_adapters",
                  "preference adapters on judge-ranked replies"),
            Stage("report", "jaxcult.recipes.care.report:write_report",
                  "tables, paired comparisons, plots")),
    context="jaxcult.recipes.care.run:CareRun",
    example="experiments/care/demo.yaml",
    run_stages=_stages,
))
