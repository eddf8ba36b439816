"""`jaxcult narratives STAGE CONFIG [KEY=VALUE ...]`: the Surveys→Narratives pipeline (EMNLP
2025) — per-culture LoRA adapters trained on survey answers plus narrative culture text, then
the cross-culture offensive-language matrix.

Stages (`run` does all three), everything under `--out` and the scenario's name:
build -> `data/<scenario>/<culture>/{train,validation}.jsonl` (plain-text records);
train -> `adapters/<scenario>/<culture>/{run,peft}` (a jaxcult run and its PEFT adapter;
finished runs are skipped, interrupted ones resume);
evaluate -> `evaluations/<scenario>/<row>.json` per model row (reused when its settings are
unchanged), `matrix-<scenario>.{json,tsv,png}`. `summary.json` collects each stage's facts.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import yaml

from jaxcult.config_loading import load_config
from jaxcult.config_narratives import SCENARIOS, NarrativeCulture, NarrativesConfig
from jaxcult.data.narrative_sources import read_culture_text, read_normad, same_country
from jaxcult.data.narrative_views import build_records
from jaxcult.errors import UserError
from jaxcult.run.stages import open_pipeline, run_in_order, write_settings
from jaxcult.rundir import write_text_atomic

STAGES = ("build", "train", "evaluate")
_SOURCES = {"survey": "survey", "culture_text": "culture_texts", "normad": "normad"}


class Narratives:
    """A resolved pipeline config with its folders."""

    def __init__(self, config: NarrativesConfig, root: Path, out: Path) -> None:
        self.config, self.root, self.out = config, root, out
        self.scenario = config.build.scenario

    def path(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def data_dir(self, culture: NarrativeCulture) -> Path:
        return self.out / "data" / self.scenario / culture.name

    def adapter_dir(self, culture: NarrativeCulture) -> Path:
        return self.out / "adapters" / self.scenario / culture.name

    def training_config(self, culture: NarrativeCulture):
        from jaxcult.run.adapter_training import check_lora_export

        settings = self.config.train
        if settings is None:
            raise UserError("narratives: the config has no `train` section (train.config: the "
                            "YAML of the training run)")
        config = load_config(self.path(settings.config), [
            *settings.overrides, "data.name=text_jsonl", "task.name=causal_lm",
            f"data.manual_dir={self.data_dir(culture).resolve()}",
            f"name={self.config.name}-{self.scenario}-{culture.name}"])
        check_lora_export(config, settings.export, self.path(settings.config))
        return config

    def note(self, stage: str, facts: dict) -> None:
        path = self.out / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary.setdefault(self.scenario, {})[stage] = facts
        write_text_atomic(path, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        print(yaml.safe_dump({stage: facts}, sort_keys=False, allow_unicode=True), end="")


def _sources(run: Narratives) -> dict:
    """The survey, culture texts and NormAd stories the scenario needs, per culture."""
    from jaxcult.data.survey import load_survey

    config, views = run.config, SCENARIOS[run.scenario]
    for view in views:
        if getattr(config, _SOURCES[view]) is None:
            raise UserError(f"build.scenario={run.scenario} uses the {view} view: set "
                            f"{_SOURCES[view]} in the config")
    found: dict[str, dict] = {c.name: {} for c in config.cultures}
    if "survey" in views:
        survey = load_survey(run.path(config.survey), config.survey_split,
                             [c.survey_name for c in config.cultures]).select(config.build.questions)
        for culture in config.cultures:
            if culture.survey_name not in survey.respondents:
                raise UserError(f"{config.survey}: no respondents of {culture.survey_name!r} "
                                f"(cultures {culture.name}: set its `survey` to one of "
                                f"{', '.join(sorted(survey.respondents))})")
            found[culture.name].update(questions=survey.questions,
                                       people=survey.respondents[culture.survey_name])
    if "culture_text" in views:
        for culture in config.cultures:
            found[culture.name]["sentences"] = read_culture_text(
                run.path(config.culture_texts) / f"{culture.name}.txt")
    if "normad" in views:
        stories = read_normad(run.path(config.normad))
        for culture in config.cultures:
            mine = [s for s in stories if any(same_country(s.country, c)
                                              for c in culture.normad_countries)]
            if not mine:
                raise UserError(f"{config.normad}: no story of {culture.normad_countries} "
                                f"(culture {culture.name}; set its `normad` countries)")
            found[culture.name]["stories"] = mine
    return found


def build(run: Narratives) -> dict:
    settings = run.config.build
    summary = {}
    for culture, sources in zip(run.config.cultures, _sources(run).values()):
        records = build_records(run.scenario, culture.name, negative_codes=settings.negative_codes,
                                **sources)
        if len(records) < 2:
            raise UserError(f"narratives build: {culture.name} has {len(records)} record(s); "
                            f"a train and a validation split need at least 2")
        random.Random(f"{settings.seed}-{culture.name}").shuffle(records)
        held = max(1, round(settings.validation_fraction * len(records)))
        folder = run.data_dir(culture)
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in (("validation", records[:held]), ("train", records[held:])):
            write_text_atomic(folder / f"{name}.jsonl", "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in part))
        summary[culture.name] = {"train": dict(Counter(r["view"] for r in records[held:])),
                                 "validation": held}
    run.note("build", summary)
    return summary


def train(run: Narratives) -> dict:
    from jaxcult.run.adapter_training import train_adapter

    settings = run.config.train
    summary = {}
    for culture in run.config.cultures:
        if not (run.data_dir(culture) / "train.jsonl").is_file():
            raise UserError(f"{run.data_dir(culture)}: no training data; run `jaxcult narratives "
                            f"build` first")
        config = run.training_config(culture)
        summary[culture.name] = train_adapter(config, run.adapter_dir(culture), settings.export,
                                              f"narratives {run.scenario} {culture.name}")
    run.note("train", summary)
    return summary


def evaluate(run: Narratives) -> dict:
    from jaxcult.run.narratives_eval import evaluate_matrix

    summary = evaluate_matrix(run)
    run.note("evaluate", summary)
    return summary


def run_stages(config_path: Path, overrides: list[str], stage: str, out: Path | None = None) -> dict:
    """Run `stage` (or all of them for `run`); returns each stage's summary."""
    config, out = open_pipeline("narratives", NarrativesConfig, config_path, overrides, stage,
                                STAGES, out)
    run = Narratives(config, config_path.resolve().parent, out)
    write_settings(config, out / f"narratives-{run.scenario}.yaml")
    return run_in_order("narratives", stage, STAGES, lambda name: globals()[name](run))
