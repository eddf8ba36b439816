"""Schema of a Surveys→Narratives pipeline config (`jaxcult narratives STAGE CONFIG`): the
cultures and their sources, then one section per stage. Paths are relative to the file."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.data.mmlu import OFFICIAL_SUBJECTS
from jaxcult.data.narrative_views import SCENARIOS
from jaxcult.recipes.adapters import AdapterTrainConfig

BASE, COMBINED = "base", "combined"   # the rows that are not a culture's adapter


class NarrativeCulture(Section):
    """A culture and its countries in each source: a language culture can span several (the
    paper's Arabic is Iraq + Jordan in the WVS and seven NormAd countries)."""

    name: str = Field(..., description="the culture's name in record texts, folders and the matrix")
    survey: str | list[str] | None = Field(
        None, description="its country or countries in the survey (WVS B_COUNTRY; several: "
        "their respondents pooled); default: name")
    normad: list[str] | None = Field(None, description="its NormAd countries; default: the "
                                     "survey countries")

    @field_validator("survey")
    @classmethod
    def _some_country(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"survey: expected one or more different countries, found {value}")
        return value

    @property
    def survey_countries(self) -> list[str]:
        if self.survey is None:
            return [self.name]
        return [self.survey] if isinstance(self.survey, str) else list(self.survey)

    @property
    def normad_countries(self) -> list[str]:
        return self.normad if self.normad is not None else self.survey_countries


class NarrativesBuildConfig(Section):
    scenario: Literal[tuple(SCENARIOS)] = Field(  # type: ignore[valid-type]
        "all_combined", description="the mix of views: " + ", ".join(
            f"{name} ({' + '.join(views)})" for name, views in SCENARIOS.items()))
    negative_codes: Literal["flip", "drop", "official"] = Field(
        "flip", description="WVS negative codes in the survey answer's mean: sign-flipped (the "
        "paper's code), left out, or `official`: the raw codes' mean, flipped when negative (the "
        "official data's precomputed answers)")
    questions: list[str] | None = Field(None, description="survey question ids (default: every "
                                        "value question of the survey)")
    validation_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="share of records held "
                                       "out for the validation loss (at least one record)")
    seed: int = 0
    combined: bool = Field(False, description="also build the union of every culture's records "
                           "and train one `combined` adapter on it (the paper's all-culture row, "
                           "evaluated like the others, left out of C-Dist)")


class OffensiveGeneration(GenerationConfig):
    max_new_tokens: int = Field(10, gt=0)


class NarrativesEvalConfig(Section):
    model: str | None = Field(None, description="the base model the adapters were trained on; "
                              "default: model.name of the train config")
    mode: Literal["generate", "logprob"] = "generate"
    base: bool = Field(True, description="also evaluate the base model (a matrix row)")
    max_examples: int | None = Field(None, gt=0, description="per task, sampled (seeded)")
    seed: int = 0
    prompt: str | None = Field(None, description="the question with {text}; default: the paper's")
    generation: OffensiveGeneration = Field(default_factory=OffensiveGeneration)
    official_quirks: bool = Field(False, description="replicate the official evaluation's "
                                  "decoding: one new token, an empty answer read as offensive, "
                                  "'not offensive' read as offensive (generate mode)")

    @model_validator(mode="after")
    def _quirks(self) -> NarrativesEvalConfig:
        if self.official_quirks and self.mode != "generate":
            raise ValueError("evaluate.official_quirks: the official quirks are of the generate "
                             "mode; set evaluate.mode: generate or drop official_quirks")
        if self.official_quirks and "max_new_tokens" in self.generation.model_fields_set:
            raise ValueError("evaluate.generation.max_new_tokens has no effect with "
                             "evaluate.official_quirks (one new token, as the official stopping "
                             "criterion gives)")
        return self

    @field_validator("prompt")
    @classmethod
    def _has_text(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError("evaluate.prompt: must contain {text} (where the sentence goes)")
        return value


class MMLUConfig(Section):
    """MMLU as the general-capability check: every matrix row also answers these questions."""

    path: str = Field(..., description="folder of the standard <subject>_test.csv files (or its "
                      "test/ subfolder): question, A, B, C, D, answer")
    subjects: list[str] = Field(default_factory=lambda: list(OFFICIAL_SUBJECTS), min_length=1,
                                description="default: the official evaluation's eight subjects")
    mode: Literal["logprob", "generate"] = Field(
        "logprob", description="logprob: the likeliest letter; generate: the official rule (one "
        "greedy token, its leading letter, an invalid answer scored as A)")
    max_examples: int | None = Field(None, gt=0, description="in all, sampled (seeded)")
    seed: int = 0


class NarrativesConfig(Section):
    name: str = "narratives"
    cultures: list[NarrativeCulture] = Field(..., min_length=1)
    survey: str | None = Field(None, description="a WorldValuesBench checkout or survey.json")
    survey_split: str = "full"
    survey_qa: str | None = Field(None, description="folder of <culture name>.jsonl survey "
                                  "question-answer records in the official data's layout (its "
                                  "50 questions and their paraphrases); the survey view reads "
                                  "them instead of a survey")
    culture_texts: str | None = Field(None, description="folder of <culture name>.txt")
    normad: str | None = Field(None, description="NormAd file (.csv, .tsv, .json, .jsonl)")
    tasks: str | None = Field(None, description="folder of <culture name>/<task>.jsonl|csv|tsv "
                              "offensive-language tasks (the evaluate stage)")
    build: NarrativesBuildConfig = Field(default_factory=NarrativesBuildConfig)
    train: AdapterTrainConfig | None = None
    evaluate: NarrativesEvalConfig = Field(default_factory=NarrativesEvalConfig)
    mmlu: MMLUConfig | None = Field(None, description="also score every row on MMLU (the "
                                    "evaluate stage)")

    @model_validator(mode="after")
    def _sources(self) -> NarrativesConfig:
        for culture in self.cultures:
            if culture.name.casefold() in (BASE, COMBINED) or not re.fullmatch(r"[\w .-]+",
                                                                               culture.name):
                raise ValueError(f"cultures: {culture.name!r} cannot name a culture (it names "
                                 f"folders and matrix rows: letters, digits, space, . _ -; "
                                 f"'{BASE}' is the base model's row, '{COMBINED}' the "
                                 f"all-culture adapter's)")
        names = [c.name.casefold() for c in self.cultures]
        if len(set(names)) != len(names):
            raise ValueError(f"cultures: a culture is listed twice in {[c.name for c in self.cultures]}")
        if self.survey_qa is not None:
            if self.survey is not None:
                raise ValueError("survey and survey_qa: the survey view reads one of them; drop "
                                 "the other")
            build_keys = self.build.model_fields_set & {"questions", "negative_codes"}
            if build_keys:
                raise ValueError(f"build.{sorted(build_keys)[0]} has no effect with survey_qa "
                                 f"(its answers are given)")
        if self.build.combined and len(self.cultures) < 2:
            raise ValueError("build.combined: an all-culture adapter needs at least two cultures")
        return self

    @property
    def adapter_cultures(self) -> list[NarrativeCulture]:
        """The cultures that get an adapter: every culture, then `combined` when built."""
        return [*self.cultures, *([NarrativeCulture(name=COMBINED)] if self.build.combined else [])]
