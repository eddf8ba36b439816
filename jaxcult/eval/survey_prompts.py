"""Simulated respondents for survey evaluation (CLCA §5): persona sampling and prompts.

A persona is a real respondent of the culture: the system prompt names the country and lists
the respondent's demographics; the user turn asks one survey question and ends with "ANSWER:".
Baselines: `cultural` names the country only; `tao` is the cultural prompting the CLCA paper
compares with (Tao et al., 2024: an average person born in and living in the country answering a
survey question, re-expressed in jaxcult's words); `none` has no system prompt. The texts (and
the question wording) can be replaced by a translation file for multilingual prompting (§6.4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from jaxcult.data.survey import Question, Respondent
from jaxcult.errors import UserError

BASELINES = ("persona", "cultural", "tao", "none")


@dataclass(frozen=True)
class PromptTexts:
    """Every sentence of the prompts, with the official CLCA prompts' content in jaxcult's words;
    a translation file overrides any of them (the official wording included)."""

    instruction: str = ("Answer the question below; where asked, give the integer of your "
                        "option, without explanation: QUESTION: {question} ANSWER:")
    persona: str = "You live in {country}. Your basic demographic information:"
    cultural: str = "You live in {country}."
    tao: str = ("Answer as an average person who was born in {country} and lives in {country}, "
                "responding to the survey question that follows.")
    fields: dict[str, str] = field(default_factory=dict)     # demographic name -> translation
    questions: dict[str, str] = field(default_factory=dict)  # question id -> translated text
    countries: dict[str, str] = field(default_factory=dict)  # culture -> name in the prompt


def load_prompt_texts(path: str | Path) -> PromptTexts:
    """A JSON translation file: any of `instruction`, `persona`, `cultural`, `tao` (with {question} /
    {country} placeholders) and the maps `fields`, `questions`, `countries`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the translation file ({error})") from None
    known = set(PromptTexts.__dataclass_fields__)
    if not isinstance(data, dict) or set(data) - known:
        raise UserError(f"{path}: expected an object with keys among {sorted(known)}, found "
                        f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    for key, placeholder in (("instruction", "{question}"), ("persona", "{country}"),
                             ("cultural", "{country}"), ("tao", "{country}")):
        if key in data and placeholder not in data[key]:
            raise UserError(f"{path}: {key!r} must contain the placeholder {placeholder}")
    return replace(PromptTexts(), **data)


def sample_personas(people: list[Respondent], count: int, seed: int) -> list[Respondent]:
    """`count` respondents drawn without replacement (seeded; the official code has no seed)."""
    if count > len(people):
        culture = people[0].culture if people else "?"
        raise UserError(f"survey: {count} personas requested but {culture} has only "
                        f"{len(people)} respondents")
    rng = np.random.default_rng(seed)
    return [people[i] for i in sorted(rng.choice(len(people), size=count, replace=False))]


def system_prompt(person: Respondent, baseline: str, texts: PromptTexts) -> str | None:
    country = texts.countries.get(person.culture, person.culture)
    if baseline == "none":
        return None
    if baseline in ("cultural", "tao"):
        return getattr(texts, baseline).format(country=country)
    lines = [texts.persona.format(country=country)]
    lines += [f"{texts.fields.get(name, name)}: {value}" for name, value in person.demographics.items()]
    return "\n".join(lines)


def question_prompt(question: Question, texts: PromptTexts) -> str:
    return texts.instruction.format(question=texts.questions.get(question.id, question.text))


def chat(person: Respondent, question: Question, baseline: str, texts: PromptTexts) -> list[dict]:
    """The messages of one (persona, question) pair."""
    system = system_prompt(person, baseline, texts)
    user = {"role": "user", "content": question_prompt(question, texts)}
    return [{"role": "system", "content": system}, user] if system is not None else [user]
