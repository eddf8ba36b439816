"""Schema of an emotional-support config (`jaxcult care STAGE CONFIG`): the annotations and the
user's posts, then one section per stage. Paths in the file are relative to the file."""

from __future__ import annotations

from pydantic import Field, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.recipes.adapters import AdapterTrainConfig
from jaxcult.recipes.care.schema import CULTURES
from jaxcult.recipes.care.strategies import BASELINE, BUILT_IN
from jaxcult.remote.settings import ModelSpec


class ReplyGeneration(GenerationConfig):
    """The paper samples replies at temperature 0.7 with room for long answers."""

    do_sample: bool = True
    temperature: float = Field(0.7, gt=0)
    max_new_tokens: int = Field(1000, gt=0)
    length_buckets: list[int] = Field(default_factory=lambda: [512, 1024, 2048])


class GenerateConfig(Section):
    """Replies of the supporter model, one per (strategy, post)."""

    model: str = Field("smollm2-135m-instruct", description="asset name or model folder (a chat "
                       "model: the strategies are system and user turns)")
    posts_per_batch: int = Field(8, gt=0, description="posts answered together per strategy; "
                                 "each finished batch is saved (resume)")
    generation: ReplyGeneration = Field(default_factory=ReplyGeneration)


class CareJudgeConfig(Section):
    """The G-Eval-style judge: one forward per (reply, metric), read at the digit after
    `answer_prefix`; no decoding."""

    model: ModelSpec | None = Field(None, description="default: generate.model; or a remote "
                                    "model {endpoint, model, ...} that returns top_logprobs")
    second_model: ModelSpec | None = Field(None, description="a second judge: both judge every "
                                           "reply and the report gives their agreement")
    metrics: list[str] | None = Field(None, description="default: all seven")
    rubrics: str | None = Field(None, description="YAML of metrics replacing or adding to the "
                                "built-in rubrics")
    answer_prefix: str = Field("Score:", description="starts the judge's answer; the digit "
                               "token comes right after it")
    min_option_mass: float = Field(0.05, ge=0, lt=1, description="below this probability on "
                                   "the digits 1-5 a judgement is unscorable")
    replies_per_batch: int = Field(16, gt=0, description="replies judged per saved batch")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        length_buckets=[512, 1024, 2048]), description="batch_size and length_buckets of the "
        "local judges' forwards")

    @model_validator(mode="after")
    def _generation_needs_a_local_judge(self) -> CareJudgeConfig:
        local = self.model is None or any(isinstance(m, str) for m in (self.model,
                                                                         self.second_model))
        self.refuse_unused("judge", ("generation",), local,
                           "to a local judge model (a remote one runs on its server)")
        return self


class SplitConfig(Section):
    """Posts held out per culture: the adapters of distill and prefer train on the others and
    are judged on these, against the prompted strategies' replies to the same posts."""

    held_out_share: float = Field(0.3, gt=0, lt=1)
    seed: int = 0


class DistillConfig(Section):
    """Context distillation: an adapter learns to give the `teacher` strategy's replies from the
    `student` strategy's (short) prompt."""

    teacher: str = "combined"
    student: str = BASELINE
    per_culture: bool = Field(True, description="one adapter per culture (false: one for all)")
    train: AdapterTrainConfig


class PreferConfig(Section):
    """Preference training on judge-ranked replies: per training post, the best-judged reply
    of any strategy against the worst, under the `student` strategy's prompt."""

    student: str = BASELINE
    per_culture: bool = True
    min_margin: float = Field(0.05, ge=0, description="a smaller gap in normalised score is a tie")
    train: AdapterTrainConfig


class CareConfig(Section):
    name: str = "care"
    annotations: str = Field(..., description="folder of the released <Culture>_data.jsonl files")
    posts: str = Field(..., description="JSONL of {post_id, text}: the posts' texts, which the "
                       "user supplies (jaxcult ships none)")
    cultures: list[str] = Field(default_factory=lambda: list(CULTURES))
    posts_per_culture: int | None = Field(None, gt=0, description="use only the first N posts "
                                          "(with text) of each culture")
    strategies: list[str] = Field(default_factory=lambda: list(BUILT_IN))
    strategy_templates: str | None = Field(None, description="YAML of name: {system, user} "
                                           "templates adding or replacing strategies")
    posts_may_train: bool = Field(False, description="set true only if the posts' terms allow "
                                  "training on them (Reddit's do not without an agreement): "
                                  "distill and prefer train on prompts containing the posts")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    judge: CareJudgeConfig = Field(default_factory=CareJudgeConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    distill: DistillConfig | None = None
    prefer: PreferConfig | None = None

    @model_validator(mode="after")
    def _baseline_and_names(self) -> CareConfig:
        if BASELINE not in self.strategies:
            raise ValueError(f"strategies must include {BASELINE!r}: the report compares every "
                             f"strategy with it")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies: a strategy is listed twice")
        if self.distill and self.distill.teacher not in self.strategies:
            raise ValueError(f"distill.teacher {self.distill.teacher!r} is not in strategies")
        if not self.cultures or len(set(self.cultures)) != len(self.cultures):
            raise ValueError("cultures: a non-empty list without repeats")
        trains = self.distill is not None or self.prefer is not None
        self.refuse_unused("care", ("posts_may_train", "split"), trains,
                           "with a distill or prefer section")
        return self
