"""Schema of a knowledge-graph config (`jaxcult cckg STAGE CONFIG`): the countries, languages
and subtopics, then one section per stage. Paths in the file are relative to the file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jaxcult.config import GenerationConfig, Section
from jaxcult.recipes.adapters import AdapterTrainConfig
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
    recorded: str | None = Field(None, description="JSONL of replies written beforehand, "
                                 "{stage, key, reply}, used instead of asking a teacher (every "
                                 "key a stage asks must be there): a hand-written graph, or "
                                 "another run's replies")
    prompts_per_batch: int = Field(8, gt=0, description="requests per saved batch (resume)")
    answer_prefix: str = Field("", description="starts the teacher's answer (e.g. '[{\"action\": "
                               "\"' keeps a small model on the JSON format); part of the reply")
    generation: TeacherGeneration = Field(default_factory=TeacherGeneration)


class EncoderConfig(Section):
    """A sentence encoder (mean pooling, as sentence-transformers)."""

    model: str
    prefix: str = Field("", description="prepended to every text (E5 models: 'query: ')")
    max_length: int = Field(256, gt=0)


class MergeEncoderConfig(EncoderConfig):
    """The encoder that merges a graph's nodes, and its merge threshold when its cosine scale
    differs from the SBERT models' the paper's 0.8 was set for."""

    threshold: float | None = Field(None, gt=-1, lt=1, description="merge when cosine "
                                    "similarity is above this (default expand.threshold)")


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
    english_encoder: MergeEncoderConfig = Field(default_factory=lambda: MergeEncoderConfig(
        model="minilm-l6"), description="for graphs in English (paper: all-MiniLM-L6-v2)")
    native_encoder: MergeEncoderConfig = Field(default_factory=lambda: MergeEncoderConfig(
        model="multilingual-e5-small", prefix="query: ", threshold=0.94), description="for "
        "graphs in other languages (paper: stsb-xlm-r-multilingual). E5's cosines run high: "
        "on the demo's Indonesian nodes paraphrases score 0.96-0.99 and unrelated events "
        "0.82-0.90, hence 0.94")
    answer_prefix: str = Field("", description="starts the teacher's answer (e.g. "
                               "'{\"intermediate_steps\": ['); part of the reply")
    generation: TeacherGeneration = Field(default_factory=TeacherGeneration)


NATIVE = "native"
class BenchmarkConfig(Section):
    """A multiple-choice file the user supplies (see `jaxcult.recipes.cckg.benchmarks`)."""

    name: str
    file: str
    country: str = Field(..., description="whose graph the questions retrieve from (a "
                         "`cultures` country)")
    layout: Literal["indoculture", "arabculture", "jaxcult"] = "jaxcult"
    columns: dict[Literal["question", "options", "answer", "discard"], str] = Field(
        default_factory=dict, description="the layout's column names replaced (a.b: key b of "
        "the mapping in column a)")
    limit: int | None = Field(None, gt=0, description="only the first N questions")


class StoriesConfig(Section):
    """Story generation judged 1-10 on relevance, fluency and coherence (the paper's three)."""

    topics: dict[str, list[str]] = Field(..., description="country -> story topics")
    conditions: list[Literal["none", "assertions", "path", "adapter"]] = Field(
        default_factory=lambda: ["none", "assertions", "path"])
    judge: ModelSpec = Field("smollm2-135m-instruct", description="a local chat model or a "
                             "remote one (the paper: gpt-4o)")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        max_new_tokens=256, length_buckets=[256, 512, 1024]), description="the stories")
    judge_generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        max_new_tokens=8, length_buckets=[256, 512, 1024, 2048]), description="the ratings "
        "(a local judge)")


class ScoringBatches(Section):
    """The static shapes option scoring compiles for."""

    batch_size: int = Field(8, gt=0, description="prompts scored together (padded to it)")
    length_buckets: list[int] = Field(default_factory=lambda: [256, 512, 1024, 2048],
                                      description="lengths compiled for (a prompt and its "
                                      "option are left-padded to the next one)")

    @model_validator(mode="after")
    def _buckets(self) -> ScoringBatches:
        self.generation()
        return self

    def generation(self) -> GenerationConfig:
        return GenerationConfig(batch_size=self.batch_size, length_buckets=self.length_buckets)


class RetrieverConfig(EncoderConfig):
    """Finds the knowledge a question gets: one encoder for questions and graph texts, which
    may be in different languages (paper: stsb-xlm-r-multilingual)."""


class EvaluateConfig(Section):
    """Students answer cultural questions with and without the graph's knowledge in the prompt;
    each option scored by its log-probability."""

    models: list[str] = Field(default_factory=lambda: ["smollm2-135m-instruct"],
                              description="local models (asset names or folders)")
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    conditions: list[Literal["none", "cot", "assertions", "path", "adapter"]] = Field(
        default_factory=lambda: ["none", "cot", "assertions", "path"], description="adapter: "
        "the model the adapt stage trained, with its country's adapter and no retrieval")
    graphs: list[str] = Field(default_factory=lambda: [ENGLISH, NATIVE], description="which "
                              "graph a retrieval condition reads: English, native (the "
                              "country's other language); each one a `cultures` entry has")
    assertions: int = Field(5, gt=0, description="assertions retrieved (the paper: 5)")
    path_text: Literal["with_relations", "without_relations"] = "with_relations"
    scoring: Literal["letter", "option"] = Field("letter", description="letter: each "
                                                 "option's letter after the lettered question; "
                                                 "option: the option text completing the question")
    retriever: RetrieverConfig = Field(default_factory=lambda: RetrieverConfig(
        model="multilingual-e5-small", prefix="query: "))
    questions_per_batch: int = Field(32, gt=0, description="questions scored per saved batch")
    scoring_batches: ScoringBatches = Field(default_factory=ScoringBatches)
    cot_generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        max_new_tokens=256, length_buckets=[256, 512, 1024]), description="the reasoning "
        "before the answer (cot)")
    stories: StoriesConfig | None = None

    @model_validator(mode="after")
    def _distinct(self) -> EvaluateConfig:
        for field in ("models", "conditions", "graphs"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"evaluate.{field} lists a value twice")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError("evaluate.benchmarks: a name is used twice")
        retrieves = {"assertions", "path"} & {*self.conditions, *(
            self.stories.conditions if self.stories else ())}
        self.refuse_unused("evaluate", ("graphs", "assertions", "path_text", "retriever"),
                           bool(retrieves), "with an assertions or path condition")
        self.refuse_unused("evaluate", ("cot_generation",), "cot" in self.conditions,
                           "with the cot condition")
        return self


RELATION_QUESTIONS = {
    "xNext": "If {action}, what does the person usually do next?",
    "xEffect": "If {action}, how does it affect the person?",
    "xNeed": "What does a person need to do first, before {action}?",
    "oNext": "If {action}, what do the other people usually do next?",
    "oEffect": "If {action}, how does it affect the other people?",
}


class AdaptConfig(Section):
    """Per country a LoRA adapter trained on its graph: relation questions about each
    assertion and each path told as a narrative; Fisher traces say which layers take it in."""

    train: AdapterTrainConfig
    items: list[Literal["assertions", "narratives"]] = Field(
        default_factory=lambda: ["assertions", "narratives"], description="assertions: "
        "'In <country>: if <action>, what ... next?' -> knowledge; narratives: a path told "
        "step by step")
    graph: str = Field(ENGLISH, description="English, or native (the country's other language)")
    held_out_share: float = Field(0.1, gt=0, lt=1, description="items kept for validation")


class CckgConfig(Section):
    name: str = "cckg"
    cultures: list[CultureConfig] = Field(..., min_length=1)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)
    adapt: AdaptConfig | None = None
    evaluate: EvaluateConfig | None = None

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
        self.generate.refuse_unused("generate", ("teacher",), self.generate.recorded is None,
                                    "without generate.recorded (recorded replies replace it)")
        countries = {c.country for c in self.cultures}
        evaluate = self.evaluate
        if evaluate is not None:
            wanted = [b.country for b in evaluate.benchmarks]
            if evaluate.stories:
                wanted += list(evaluate.stories.topics)
            for country in wanted:
                if country not in countries:
                    raise ValueError(f"evaluate: country {country!r} has no graph (cultures: "
                                     f"{', '.join(sorted(countries))})")
            languages = {c.language for c in self.cultures}
            for graph in evaluate.graphs:
                if graph != NATIVE and graph not in languages:
                    raise ValueError(f"evaluate.graphs: {graph!r} is neither English, native "
                                     f"nor a language of `cultures` ({', '.join(sorted(languages))})")
            if not evaluate.benchmarks and evaluate.stories is None:
                raise ValueError("evaluate: give benchmarks, stories or both")
            conditions = {*evaluate.conditions, *(evaluate.stories.conditions
                                                  if evaluate.stories else ())}
            if "adapter" in conditions and self.adapt is None:
                raise ValueError("evaluate: the adapter condition needs an `adapt` section")
        return self

    def graph_language(self, country: str, graph: str) -> str | None:
        """The language of `country`'s graph that `graph` (English / native) names, or None
        when the config has no such graph."""
        languages = [c.language for c in self.cultures if c.country == country]
        if graph == NATIVE:
            native = [lang for lang in languages if lang != ENGLISH]
            return native[0] if native else None
        return graph if graph in languages else None
