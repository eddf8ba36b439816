"""Schema of a knowledge-graph config (`jaxcult cckg STAGE CONFIG`): the countries, languages
and subtopics, then one section per stage. Paths in the file are relative to the file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.remote.settings import ModelSpec

ENGLISH = "English"


class CultureConfig(Section):
    """One graph: a country's subtopics, asked and answered in one language."""

    country: str
    language: str = Field(ENGLISH, description="the language the assertions are written in "
                          "(the paper: English, and each country's own)")
    subtopics: list[str] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> CultureConfig:
        if len(set(self.subtopics)) != len(self.subtopics):
            raise ValueError(f"cultures: {self.country}/{self.language} lists a subtopic twice")
        return self


class TeacherGeneration(GenerationConfig):
    """The paper samples the teacher at temperature 1 and asks for as many assertions as it
    will give."""

    do_sample: bool = True
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(1024, gt=0)
    length_buckets: list[int] = Field(default_factory=lambda: [256, 512, 1024])


class GenerateConfig(Section):
    """Assertions per (country, language, subtopic) from the teacher model."""

    teacher: ModelSpec = Field("smollm2-135m-instruct", description="a local chat model, or a "
                               "remote one {endpoint, model, ...}")
    prompts_per_batch: int = Field(8, gt=0, description="requests per saved batch (resume)")
    answer_prefix: str = Field("", description="starts the teacher's answer (e.g. '[{\"action\": "
                               "\"' keeps a small model on the JSON format); part of the reply")
    generation: TeacherGeneration = Field(default_factory=TeacherGeneration)


class EncoderConfig(Section):
    """A sentence encoder for merging nodes (mean pooling, as sentence-transformers)."""

    model: str
    prefix: str = Field("", description="prepended to every text (E5 models: 'query: ')")
    max_length: int = Field(256, gt=0)


class ExpandConfig(Section):
    """Chains: each next-step assertion is asked for the steps between its action and its
    knowledge and the steps after; next steps whose knowledge is close to a known node join it,
    the others are expanded in the next round."""

    rounds: int = Field(2, ge=1, description="rounds of teacher expansion (the paper's three "
                        "'extensions': two rounds, then a last merge)")
    threshold: float = Field(0.8, gt=-1, lt=1, description="merge when cosine similarity is "
                             "above this")
    merge: Literal["first", "best"] = Field("first", description="first: the first known node "
                                            "above the threshold (official code); best: the "
                                            "most similar one")
    max_new_nodes: int = Field(6, ge=1, description="per expanded row, only its first N next "
                               "steps may be expanded further (official code: 6)")
    english_encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(
        model="minilm-l6"), description="for graphs in English (paper: all-MiniLM-L6-v2)")
    native_encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(
        model="multilingual-e5-small", prefix="query: "), description="for graphs in other "
        "languages (paper: stsb-xlm-r-multilingual)")
    answer_prefix: str = Field("", description="starts the teacher's answer (e.g. "
                               "'{\"intermediate_steps\": ['); part of the reply")
    generation: TeacherGeneration = Field(default_factory=TeacherGeneration)


class CckgConfig(Section):
    name: str = "cckg"
    cultures: list[CultureConfig] = Field(..., min_length=1)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)

    @model_validator(mode="after")
    def _distinct(self) -> CckgConfig:
        keys = [(c.country, c.language) for c in self.cultures]
        if len(set(keys)) != len(keys):
            raise ValueError("cultures: a (country, language) pair is listed twice")
        languages = {c.language for c in self.cultures}
        self.expand.refuse_unused("expand", ("english_encoder",), ENGLISH in languages,
                                  "to graphs in English")
        self.expand.refuse_unused("expand", ("native_encoder",), bool(languages - {ENGLISH}),
                                  "to graphs in languages other than English")
        return self
