"""The three Surveys→Narratives stages over a `Narratives` context; each returns its facts (the
runner writes them to `summary.json` under the scenario). See `jaxcult.recipes.narratives`
for the files they read and write, and what each one's provenance covers."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from jaxcult.config_loading import load_config
from jaxcult.data.narrative_sources import (
    read_culture_text,
    read_normad,
    read_survey_qa,
    same_country,
)
from jaxcult.data.narrative_views import build_records
from jaxcult.errors import UserError
from jaxcult.recipes.narratives.config import COMBINED, SCENARIOS, NarrativeCulture, NarrativesConfig
from jaxcult.rundir import write_text_atomic

_SOURCES = {"survey": ("survey", "survey_qa"), "culture_text": ("culture_texts",),
            "normad": ("normad",)}


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
        from jaxcult.recipes.adapters import check_lora_export

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


def _sources(run: Narratives) -> dict:
    """The survey, culture texts and NormAd stories the scenario needs, per culture."""
    from jaxcult.data.survey import load_survey

    config, views = run.config, SCENARIOS[run.scenario]
    for view in views:
        if all(getattr(config, source) is None for source in _SOURCES[view]):
            raise UserError(f"build.scenario={run.scenario} uses the {view} view: set "
                            f"{' or '.join(_SOURCES[view])} in the config")
    found: dict[str, dict] = {c.name: {} for c in config.cultures}
    if "survey" in views and config.survey_qa is not None:
        for culture in config.cultures:
            found[culture.name]["survey_pairs"] = read_survey_qa(
                run.path(config.survey_qa) / f"{culture.name}.jsonl")
    elif "survey" in views:
        countries = list(dict.fromkeys(c for culture in config.cultures
                                       for c in culture.survey_countries))
        survey = load_survey(run.path(config.survey), config.survey_split,
                             countries).select(config.build.questions)
        for culture in config.cultures:
            for country in culture.survey_countries:
                if country not in survey.respondents:
                    raise UserError(f"{config.survey}: no respondents of {country!r} (culture "
                                    f"{culture.name}: its `survey` countries must be among "
                                    f"{', '.join(sorted(survey.respondents))})")
            found[culture.name].update(questions=survey.questions, people=[
                person for country in culture.survey_countries
                for person in survey.respondents[country]])
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


def _write_splits(folder: Path, splits: dict[str, list[dict]]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        write_text_atomic(folder / f"{name}.jsonl", "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return {"train": dict(Counter(r["view"] for r in splits["train"])),
            "validation": len(splits["validation"])}


def build(run: Narratives) -> dict:
    settings = run.config.build
    summary, every = {}, {"validation": [], "train": []}
    for culture, sources in zip(run.config.cultures, _sources(run).values()):
        records = build_records(run.scenario, culture.name, negative_codes=settings.negative_codes,
                                **sources)
        if len(records) < 2:
            raise UserError(f"narratives build: {culture.name} has {len(records)} record(s); "
                            f"a train and a validation split need at least 2")
        random.Random(f"{settings.seed}-{culture.name}").shuffle(records)
        held = max(1, round(settings.validation_fraction * len(records)))
        splits = {"validation": records[:held], "train": records[held:]}
        summary[culture.name] = _write_splits(run.data_dir(culture), splits)
        for name, part in splits.items():
            every[name] += part
    if settings.combined:   # every culture's splits, as the official all-culture run's files
        summary[COMBINED] = _write_splits(run.data_dir(run.config.adapter_cultures[-1]), every)
    return summary


def train(run: Narratives) -> dict:
    from jaxcult.recipes.adapters import train_adapter

    settings = run.config.train
    summary = {}
    for culture in run.config.adapter_cultures:
        if not (run.data_dir(culture) / "train.jsonl").is_file():
            raise UserError(f"{run.data_dir(culture)}: no training data; run `jaxcult narratives "
                            f"build` first")
        config = run.training_config(culture)
        summary[culture.name] = train_adapter(config, run.adapter_dir(culture), settings.export,
                                              f"narratives {run.scenario} {culture.name}")
    return summary


def evaluate(run: Narratives) -> dict:
    from jaxcult.recipes.narratives.evaluate import evaluate_matrix

    summary = evaluate_matrix(run)
    return summary


def build_provenance(run: Narratives) -> dict:
    """What the built data depend on: the cultures, their sources and the build settings."""
    config = run.config
    return {"cultures": [c.model_dump(mode="json") for c in config.cultures],
            "sources": {name: getattr(config, name) for name in
                        ("survey", "survey_split", "survey_qa", "culture_texts", "normad")},
            "build": config.build.model_dump(mode="json")}


def train_provenance(run: Narratives) -> dict:
    """What the adapters depend on: the built data, and each culture's resolved training run
    (a changed training YAML counts, not only its path)."""
    return {"data": build_provenance(run),
            "runs": {c.name: run.training_config(c).to_dict() for c in run.config.adapter_cultures}}
