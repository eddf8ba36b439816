"""Preference pairs from jaxcult's own models: sample replies, rank them with a judge, build
chosen/rejected pairs, train a preference adapter on them, and score its replies
(docs/preference.md).

`jaxcult pairs STAGE CONFIG [KEY=VALUE ...]`; stages (`run` does all), everything under
`--out`: sample -> `samples.jsonl` (N sampled replies per prompt; resumes by prompt batch);
judge -> `judgements.jsonl` (each reply's score from a log-probability judge, or why it is
unscorable); build -> `pairs/{train,validation}.jsonl` (dataset `preference_jsonl`, prompts
held out by id) and `pairs/report.json` (ties and prompts without a pair, counted); train ->
`adapter/{run,peft}` (`jaxcult train` with task.name=preference); evaluate ->
`evaluation.json` (the judge's mean score of greedy replies to the held-out prompts, base model
against the trained adapter). Each stage file has a provenance file beside it; a later call
with other settings is refused rather than mixing two experiments in one folder.
"""

from __future__ import annotations

from jaxcult.recipes.base import Recipe, Stage, register_recipe
from jaxcult.recipes.pairs.config import PairsConfig

_STAGES = "jaxcult.recipes.pairs.stages"

RECIPE = register_recipe(Recipe(
    name="pairs",
    help="preference pairs: sample replies, rank them with a judge, train DPO/IPO/ORPO on them",
    description="Sample N replies per prompt with the generation engine, score each with a "
                "log-probability judge (digit rating or yes/no), write chosen/rejected pairs "
                "with scores and provenance, train a preference adapter on them and compare the "
                "judge's score of greedy replies before and after. Stages: sample, judge, build, "
                "train, evaluate; `run` does all. See docs/preference.md.",
    settings=PairsConfig,
    stages=(Stage("sample", f"{_STAGES}:sample", "N sampled replies per prompt"),
            Stage("judge", f"{_STAGES}:judge", "score every reply"),
            Stage("build", f"{_STAGES}:build", "chosen/rejected pairs, train and validation"),
            Stage("train", f"{_STAGES}:train", "a preference adapter on the pairs"),
            Stage("evaluate", f"{_STAGES}:evaluate", "judge greedy replies, base vs adapter")),
    context=f"{_STAGES}:PairsRun",
    example="experiments/preference/demo.yaml",
))
