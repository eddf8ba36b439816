"""Schema of a CLCA recipe config (`jaxcult clca STAGE CONFIG`): the cultures and scenarios,
then one section per stage. Paths in the file are relative to the file.

Each stage's `generation` section starts from that stage's defaults (role-play samples with
top-p 0.7 and up to 500 new tokens, as the paper; judges and the annotator decode greedily),
so setting one key keeps the others.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.recipes.adapters import AdapterTrainConfig
from jaxcult.remote.settings import ModelSpec

CONFIDENCE_LEVELS = ("very confident", "confident", "not sure")   # the judges' choices 1..3
JUDGE_LABELS = {"quality": ("good", "bad"), "culture": ("aligned", "not aligned"),
                "meta": ("good", "bad")}
JUDGE_FIELDS = {"quality": "Quality", "culture": "Culture alignment", "meta": "Meta label"}
LONG_PROMPTS = [256, 512, 1024, 2048, 4096]


class RoleplayGeneration(GenerationConfig):
    do_sample: bool = True
    top_p: float = Field(0.7, gt=0, le=1)
    max_new_tokens: int = Field(500, gt=0)
    length_buckets: list[int] = Field(default_factory=lambda: list(LONG_PROMPTS))
    prefix_cache_mb: int = Field(2048, ge=0, description="each turn's prompt starts with the "
                                 "previous turn's history: its keys and values are reused")


class JudgeGeneration(GenerationConfig):
    max_new_tokens: int = Field(128, gt=0)
    length_buckets: list[int] = Field(default_factory=lambda: list(LONG_PROMPTS))


class IntentGeneration(GenerationConfig):
    max_new_tokens: int = Field(100, gt=0)
    length_buckets: list[int] = Field(default_factory=lambda: list(LONG_PROMPTS))


class ClcaSimulateConfig(Section):
    """Role-play: one model plays both agents unless `responder_model` is given. A model is a
    local name (asset, folder, Hub id) or a remote one: {endpoint, model, api_key_env, ...}."""

    model: ModelSpec = "smollm2-135m-instruct"
    responder_model: ModelSpec | None = Field(None, description="default: model (one model, "
                                              "both roles)")
    max_turns: int = Field(10, gt=0)
    samples: int = Field(2, gt=0, description="conversations generated per scenario")
    repair: bool = Field(True, description="one greedy re-format call for a malformed answer")
    dialogues_per_batch: int = Field(
        16, gt=0, description="dialogues advanced together; each finished batch is saved (resume)")
    answer_prefix: str = Field("", description="text that starts every answer, e.g. 'ACTION:' "
                               "(not in the paper; keeps small models on the format)")
    on_parse_failure: Literal["stop", "speak"] = Field(
        "stop", description="an answer still malformed after repair: stop the dialogue (the "
        "paper) or take its text as speech (recorded as a parse failure either way)")
    generation: RoleplayGeneration = Field(default_factory=RoleplayGeneration)


class DiscardCondition(Section):
    judge: Literal["quality", "culture", "meta"]
    verdict: str
    confidence: list[str] = Field(default_factory=lambda: list(CONFIDENCE_LEVELS))

    @model_validator(mode="after")
    def _known(self) -> DiscardCondition:
        if self.verdict not in JUDGE_LABELS[self.judge]:
            raise ValueError(f"judge.discard_when: the {self.judge} judge answers "
                             f"{' or '.join(JUDGE_LABELS[self.judge])}, not {self.verdict!r}")
        unknown = [c for c in self.confidence if c not in CONFIDENCE_LEVELS]
        if unknown:
            raise ValueError(f"judge.discard_when: unknown confidence {unknown[0]!r} (levels: "
                             f"{', '.join(CONFIDENCE_LEVELS)})")
        return self


def _paper_rule() -> list[list[DiscardCondition]]:
    return [[DiscardCondition(judge="meta", verdict="bad", confidence=["very confident"])],
            [DiscardCondition(judge="quality", verdict="bad", confidence=["very confident"])]]


class ClcaJudgeConfig(Section):
    """Discard a conversation when every condition of any one clause holds."""

    model: ModelSpec | None = Field(None, description="default: simulate.model")
    discard_when: list[list[DiscardCondition]] = Field(default_factory=_paper_rule)
    on_unparsed: Literal["keep", "discard"] = Field(
        "keep", description="a conversation with an unreadable verdict")
    prefill_field: bool = Field(False, description="start every answer with its schema's first "
                                "field (Quality:, ...); not in the paper, keeps small models on "
                                "the format")
    generation: JudgeGeneration = Field(default_factory=JudgeGeneration)


class ClcaAnnotateConfig(Section):
    model: ModelSpec | None = Field(None, description="default: simulate.model")
    answer_prefix: str = Field("", description="text that starts every answer, e.g. 'INTENT:'")
    generation: IntentGeneration = Field(default_factory=IntentGeneration)


class ClcaBuildConfig(Section):
    views: list[Literal["dialogue", "intent"]] = Field(
        default_factory=lambda: ["dialogue", "intent"], min_length=1)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                       description="share of conversations held out")
    intent_layout: Literal["conversation", "utterance"] = Field(
        "conversation", description="intent view: one chat per conversation with every "
        "utterance's intent, unknown kept (the official code), or one chat per utterance, "
        "unknown left out")
    view_persona: Literal["assistant", "user"] = Field(
        "assistant", description="whom the perspective views' system prompt describes: the "
        "assistant's own speaker, or the user-side speaker (the official code)")
    seed: int = 0


class ClcaConfig(Section):
    name: str = "clca"
    cultures: list[str] = Field(default_factory=lambda: ["uk", "china", "germany", "mexico",
                                                         "japan"], min_length=1)
    scenarios: str = Field("scenarios", description="folder of <culture>.jsonl scenario files")
    scenarios_per_culture: int | None = Field(None, gt=0, description="the first N of each file")
    cultures_file: str | None = Field(None, description="extra culture descriptions (YAML)")
    simulate: ClcaSimulateConfig = Field(default_factory=ClcaSimulateConfig)
    judge: ClcaJudgeConfig = Field(default_factory=ClcaJudgeConfig)
    annotate: ClcaAnnotateConfig = Field(default_factory=ClcaAnnotateConfig)
    build: ClcaBuildConfig = Field(default_factory=ClcaBuildConfig)
    train: AdapterTrainConfig | None = None

    @field_validator("cultures")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        lowered = [v.lower() for v in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"cultures: a culture is listed twice in {value}")
        return lowered
