"""Survey alignment of a chat LM (CLCA §5): simulated respondents answer every question; the
model's answer distribution per question is compared with the culture's real one.

Two ways to read the model's answer:

- `generate` (the paper): greedy decoding, the first line parsed to an option (else the
  safeguard bin, counted wrong);
- `logprob` (beyond the paper): every option's continuation is scored and the persona's answer
  is the model's full distribution over the options (its argmax for individual accuracy) — no
  parse failures and a true model distribution for the KL; one forward per prompt when the
  options are single tokens (digits usually are), else one per option.

The survey histogram uses all of the culture's respondents; the model histogram the sampled
personas. Metrics per question, then averaged per culture (docs/cultural-eval.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from jaxcult.config import GenerationConfig
from jaxcult.data.survey import Question, Respondent, Survey
from jaxcult.errors import UserError
from jaxcult.eval.survey import (
    answered_accuracy,
    histogram,
    individual_accuracy,
    js_distance,
    kl_official,
    kl_paper_direction,
    normalised,
)
from jaxcult.eval.survey_answers import parse_answer, parse_answer_official
from jaxcult.eval.survey_prompts import PromptTexts, chat, sample_personas
from jaxcult.generation.api import generate
from jaxcult.generation.prompts import Chat, render_chat
from jaxcult.generation.scoring import option_logprobs

MODES = ("generate", "logprob")
PARSINGS = ("official", "lenient")  # see jaxcult.eval.survey_answers
REMOTE_SLICE = 256   # chats sent to a remote model between progress lines


@dataclass
class QuestionResult:
    id: str
    model: list[float]        # options low..high, then the safeguard bin
    survey: list[float]
    kl_official: float        # the CLCA code's value (its tables): KL(survey || softmax(P_model))
    kl_paper_direction: float  # KL(P_model || Q_survey) over the options, as the paper prints it
    js_distance: float
    parse_failures: float     # fraction of personas whose answer parsed to no option
    respondents: int          # survey answers behind `survey`


@dataclass
class CultureResult:
    culture: str
    personas: int
    kl_official: float
    kl_paper_direction: float
    js_distance: float
    individual_accuracy: float   # the CLCA code's: per persona over all questions, then the mean
    answered_accuracy: float     # pooled over pairs whose real answer exists
    parse_failure_rate: float
    questions: list[QuestionResult]

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "questions"}


def survey_counts(people: list[Respondent], question: Question) -> np.ndarray:
    answers = [p.answers.get(question.id) for p in people]
    counts = histogram([a for a in answers if a is not None], question.low, question.high)
    if counts.sum() == 0:
        raise UserError(f"survey: no respondent of {people[0].culture} answered {question.id}")
    return counts


def option_distributions(model, tokenizer, prompts: list[str], questions: list[Question],
                         config: GenerationConfig, *, one_forward: bool = True,
                         on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Per prompt: softmax over its question's options of the options' log-likelihoods (the
    continuation "k" right after the assistant's cue), with a zero safeguard bin appended."""
    logps = option_logprobs(model, tokenizer, prompts, [[str(v) for v in q.options] for q in questions],
                            config, one_forward=one_forward, on_batch=on_batch)
    distributions = []
    for logp in logps:
        p = np.exp(logp - logp.max())
        distributions.append(np.append(p / p.sum(), 0.0))
    return distributions


def _mean_defined(values: list[float]) -> float:
    """The mean over the questions where the value is defined (NaN when none is)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def answer_chats(model, tokenizer, chats: list[Chat], config: GenerationConfig,
                 advance: Callable[[int], None]) -> list[str]:
    """Reply texts: a jaxcult causal LM (with its tokenizer) decodes here; a `ChatModel`
    (tokenizer None; e.g. a remote server) answers in slices, with progress between."""
    if tokenizer is not None:
        return [c.text for c in generate(model, tokenizer, chats, config, on_batch=advance)]
    texts = []
    for start in range(0, len(chats), REMOTE_SLICE):
        replies = model.reply(chats[start:start + REMOTE_SLICE], config)
        texts += [r.text for r in replies]   # a refused prompt ("" + error) reads as no option
        advance(len(replies))
    return texts


def evaluate_culture(model, tokenizer, survey: Survey, culture: str, *, personas: int, seed: int,
                     mode: str = "generate", baseline: str = "persona",
                     texts: PromptTexts = PromptTexts(),
                     config: GenerationConfig = GenerationConfig(), parsing: str = "official",
                     progress: Callable[[int, int], None] | None = None) -> CultureResult:
    """Every sampled persona answers every question of `survey` (see the module docstring)."""
    people = survey.respondents[culture]
    sampled = sample_personas(people, personas, seed)
    pairs = [(person, q) for person in sampled for q in survey.questions]
    chats = [chat(person, q, baseline, texts) for person, q in pairs]
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], len(pairs))
    if mode == "generate":
        replies = answer_chats(model, tokenizer, chats, config, advance)
        answers = [parse_answer_official(text, q.low, q.high) if parsing == "official"
                   else parse_answer(text, q.low, q.high, q.labels)
                   for text, (_, q) in zip(replies, pairs)]
        per_pair = [histogram([a], q.low, q.high) for a, (_, q) in zip(answers, pairs)]
    else:
        prompts = [render_chat(c, tokenizer) for c in chats]
        per_pair = option_distributions(model, tokenizer, prompts, [q for _, q in pairs], config,
                                        on_batch=advance)
        answers = [q.low + int(np.argmax(d[:-1])) for d, (_, q) in zip(per_pair, pairs)]
    results = []
    for index, q in enumerate(survey.questions):
        rows = range(index, len(pairs), len(survey.questions))
        model_counts = np.sum([per_pair[r] for r in rows], axis=0)
        counts = survey_counts(people, q)
        results.append(QuestionResult(
            q.id, normalised(model_counts).tolist(), normalised(counts).tolist(),
            kl_official(model_counts, counts), kl_paper_direction(model_counts, counts),
            js_distance(model_counts, counts), float(model_counts[-1] / len(rows)),
            int(counts.sum())))
    actual = [person.answers.get(q.id) for person, q in pairs]
    asked = len(survey.questions)
    by_persona = [range(start, start + asked) for start in range(0, len(pairs), asked)]
    return CultureResult(
        culture, len(sampled), float(np.mean([r.kl_official for r in results])),
        _mean_defined([r.kl_paper_direction for r in results]),
        float(np.mean([r.js_distance for r in results])),
        individual_accuracy([[answers[i] for i in rows] for rows in by_persona],
                            [[actual[i] for i in rows] for rows in by_persona]),
        answered_accuracy(answers, actual),
        float(np.mean([r.parse_failures for r in results])), results)
