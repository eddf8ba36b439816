"""Schema of a pair-building config (`jaxcult pairs STAGE CONFIG`): the prompts, then one
section per stage. Paths in the file are relative to the file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.recipes.adapters import AdapterTrainConfig
from jaxcult.remote.settings import ModelSpec, RemoteModel

JUDGE_PROMPT = (
    "Here is a message and a reply to it.\n\nMessage:\n{prompt}\n\nReply:\n{reply}\n\n"
    "How good is the reply: helpful, correct, and respectful of the asker's culture? "
    "{question}")
DIGITS_QUESTION = "Give one digit from 1 (very poor) to {scale} (excellent)."
YES_NO_QUESTION = "Is it a good reply? Answer {yes} or {no}."


class SampleGeneration(GenerationConfig):
    do_sample: bool = True
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0)


class SampleConfig(Section):
    """N sampled replies per prompt from the model being taught."""

    model: str = "smollm2-135m-instruct"
    samples_per_prompt: int = Field(4, ge=2)
    chat: bool = Field(True, description="plain prompts go through the chat template as a user "
                       "turn (false: the raw text is continued)")
    system: str | None = Field(None, description="a system turn before each plain prompt (chat); "
                               "kept in the pairs, so training sees the same conversation")
    prompts_per_batch: int = Field(8, gt=0, description="prompts sampled together; each "
                                   "finished batch is saved (resume)")
    generation: SampleGeneration = Field(default_factory=SampleGeneration)

    @model_validator(mode="after")
    def _system_needs_chat(self) -> SampleConfig:
        self.refuse_unused("sample", ("system",), self.chat, "to sample.chat=true")
        return self


class JudgeConfig(Section):
    """A log-probability judge: the judge model reads the prompt and one reply and answers with
    one option token; nothing is generated, so no answer is ever unreadable, but one whose
    options got little of the judge's probability is reported as unscorable.

    `digits`: the options are 1..scale; the score is their probability-weighted mean (a
    G-Eval-style expected rating). `yes_no`: the score is log p(yes) - log p(no)."""

    model: ModelSpec | None = Field(None, description="default: sample.model; or a remote "
                                    "model {endpoint, model, api_key_env, ...} that returns "
                                    "top_logprobs")
    kind: Literal["digits", "yes_no"] = "digits"
    scale: int = Field(5, ge=2, le=9, description="digits: the highest rating")
    yes: str = "yes"
    no: str = "no"
    template: str = Field(JUDGE_PROMPT, description="the judge's user turn; fields {prompt}, "
                          "{reply}, {question}")
    answer_prefix: str = Field("Rating:", description="starts the judge's answer; the option "
                               "token comes right after it")
    min_option_mass: float = Field(0.05, ge=0, lt=1, description="below this total probability "
                                   "on the options a judgement counts as unscorable")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        length_buckets=[128, 256, 512, 1024]), description="batch_size and length_buckets of "
        "the scoring forwards")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> JudgeConfig:
        self.refuse_unused("judge", ("scale",), self.kind == "digits", "to judge.kind=digits")
        self.refuse_unused("judge", ("yes", "no"), self.kind == "yes_no", "to judge.kind=yes_no")
        self.refuse_unused("judge", ("generation",), not isinstance(self.model, RemoteModel),
                           "to a local judge model (a remote one runs on its server)")
        missing = [f for f in ("{prompt}", "{reply}") if f not in self.template]
        if missing:
            raise ValueError(f"judge.template: no {missing[0]} field")
        return self

    def question(self) -> str:
        if self.kind == "digits":
            return DIGITS_QUESTION.format(scale=self.scale)
        return YES_NO_QUESTION.format(yes=self.yes, no=self.no)

    def options(self) -> list[str]:
        if self.kind == "digits":
            return [str(k) for k in range(1, self.scale + 1)]
        return [self.yes, self.no]


class BuildConfig(Section):
    pairing: Literal["best_worst", "all"] = Field(
        "best_worst", description="per prompt: the best against the worst reply, or every two "
        "replies whose scores differ by min_margin")
    min_margin: float = Field(0.1, ge=0, description="a smaller score difference is a tie")
    validation_share: float = Field(0.2, ge=0, lt=1, description="share of prompts held out "
                                    "(their pairs validate, their prompts evaluate)")
    seed: int = 0


class EvaluateConfig(Section):
    """Greedy replies to the held-out prompts from the base model and the trained adapter,
    scored by the judge."""

    generation: GenerationConfig = Field(default_factory=GenerationConfig)


class PairsConfig(Section):
    name: str = "pairs"
    prompts: str = Field(..., description="JSONL of {prompt | messages, id?, language?}")
    sample: SampleConfig = Field(default_factory=SampleConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: AdapterTrainConfig | None = None
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
