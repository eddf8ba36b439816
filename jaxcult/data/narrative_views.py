"""The training views of Surveys→Narratives (EMNLP 2025): plain-text records, full-sequence loss.

- `survey`: one record per survey question — "### Task: Survey Question-Answer / ### Question /
  ### Answer", the answer being int(mean of the culture's answers) (truncated, as the paper's
  code). WVS negative codes (don't know, no answer, ...) are sign-flipped into the mean by
  default (`negative_codes="flip"`); `"drop"` leaves them out; `"official"` is the rule of the
  official data's precomputed answers: the mean of the raw codes, negative ones included, its
  sign flipped when it is negative. Or, from the official survey-QA files
  (`survey_pairs`), one record per (question, answer) as given.
- `culture_text`: one record per sentence of the culture's text — "### Task: Cultural Context /
  ### Culture / ### Description".
- `normad`: one record per NormAd story of the culture's countries — "### Task: NormAd Cultural
  Context / ### Culture / ### Country / ### Background / ### Rule-of-Thumb / ### Story /
  ### Explanation".

A scenario is a mix of views (`SCENARIOS`), named as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from jaxcult.data.narrative_sources import NormAdStory
from jaxcult.data.survey import Question, Respondent

# Surveys→Narratives' training mixes: scenario -> the views it holds (data.narrative_views).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "normal": ("survey",),
    "cultural_context": ("survey", "culture_text"),
    "normad_context": ("survey", "normad"),
    "wiki_only": ("culture_text",),
    "normad_only": ("normad",),
    "all_combined": ("survey", "culture_text", "normad"),
}

NegativeCodes = Literal["flip", "drop", "official"]


def survey_answer(people: Sequence[Respondent], question: Question,
                  negative_codes: NegativeCodes = "flip") -> int | None:
    """int(mean) of the culture's answers to `question` (None when nobody answered)."""
    if negative_codes == "drop":
        values = [a for p in people if (a := p.answers.get(question.id)) is not None]
    else:
        values = [code for p in people
                  if (code := p.codes.get(question.id, p.answers.get(question.id))) is not None]
    if not values:
        return None
    if negative_codes == "flip":
        return int(sum(abs(v) for v in values) / len(values))
    return int(abs(sum(values) / len(values)))


def survey_text(question: str, answer: int | str) -> str:
    return f"### Task: Survey Question-Answer\n### Question: {question}\n### Answer: {answer}"


def culture_text(culture: str, sentence: str) -> str:
    return f"### Task: Cultural Context\n### Culture: {culture}\n### Description: {sentence}"


def normad_text(culture: str, story: NormAdStory) -> str:
    return (f"### Task: NormAd Cultural Context\n### Culture: {culture}\n"
            f"### Country: {story.country}\n### Background: {story.background}\n"
            f"### Rule-of-Thumb: {story.rule_of_thumb}\n### Story: {story.story}\n"
            f"### Explanation: {story.explanation}")


def build_records(scenario: str, culture: str, *, questions: Sequence[Question] = (),
                  people: Sequence[Respondent] = (), sentences: Sequence[str] = (),
                  stories: Sequence[NormAdStory] = (), negative_codes: NegativeCodes = "flip",
                  survey_pairs: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """The `{"text", "view", "culture"}` records of one culture for `scenario`; the survey
    view from `survey_pairs` (given question-answer pairs) when there are any, else from the
    respondents' answers to `questions`."""
    views = SCENARIOS[scenario]
    records = []
    if "survey" in views:
        records.extend({"text": survey_text(q, a), "view": "survey"} for q, a in survey_pairs)
        for question in questions:
            answer = survey_answer(people, question, negative_codes)
            if answer is not None:
                records.append({"text": survey_text(question.text, answer), "view": "survey",
                                "question": question.id})
    if "culture_text" in views:
        records.extend({"text": culture_text(culture, s), "view": "culture_text"} for s in sentences)
    if "normad" in views:
        records.extend({"text": normad_text(culture, s), "view": "normad"} for s in stories)
    return [{**r, "culture": culture} for r in records]
