"""MMLU scoring of a causal LM (questions from `jaxcult.data.mmlu`).

The prompt carries the question, the lettered options and an answer cue. Answers are read
either

- `logprob` (default): the likeliest of the letters " A" ... " D" as the prompt's next token
  (one forward per question, no unreadable answers);
- `generate` (the official code's rule): one greedy new token (its stopping criterion ends
  decoding there), the letter A-D it starts with; an answer without one is counted invalid
  and scored as "A", as the official code does.

Scores: accuracy and macro-F1 over the four letters (scikit-learn's `f1_score(average="macro",
labels=A-D)`: a letter never gold nor predicted scores 0), and the invalid count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jaxcult.config import GenerationConfig
from jaxcult.data.mmlu import LETTERS, MMLUQuestion
from jaxcult.eval.classes import f1_by_class

MODES = ("logprob", "generate")
_LEADING_LETTER = re.compile(r"\s*([A-D])")


@dataclass
class MMLUResult:
    questions: int
    accuracy: float
    macro_f1: float
    invalid: int
    per_subject: dict[str, float]   # accuracy


def prompt(question: MMLUQuestion) -> str:
    """The question block, the lettered options and the answer cue (the official fields)."""
    options = "".join(f"{letter}. {text}\n" for letter, text in zip(LETTERS, question.options))
    return f"### Question:\n{question.question}\n\nOptions:\n{options}### Answer:"


def read_letter(completion: str) -> str | None:
    """The letter A-D a completion starts with (after whitespace), else None."""
    match = _LEADING_LETTER.match(completion)
    return match.group(1) if match else None


def predict(model, tokenizer, questions: Sequence[MMLUQuestion], *, mode: str = "logprob",
            config: GenerationConfig = GenerationConfig(),
            on_batch: Callable[[int], None] | None = None) -> list[str | None]:
    """Each question's answer letter (None: no letter, `generate` only)."""
    from jaxcult.generation.api import generate
    from jaxcult.generation.scoring import option_logprobs

    prompts = [prompt(q) for q in questions]
    if mode == "generate":
        one_token = config.model_copy(update={"max_new_tokens": 1})
        completions = generate(model, tokenizer, prompts, one_token, on_batch=on_batch)
        return [read_letter(c.text) for c in completions]
    if mode != "logprob":
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, found {mode!r}")
    options = [tuple(f" {letter}" for letter in LETTERS)] * len(prompts)
    logps = option_logprobs(model, tokenizer, prompts, options, config, add_special_tokens=True,
                            on_batch=on_batch)
    return [LETTERS[int(np.argmax(logp))] for logp in logps]


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean F1 over the four letters (`eval.classes.f1_by_class`)."""
    return float(f1_by_class(np.array([LETTERS.index(g) for g in gold]),
                             np.array([LETTERS.index(p) for p in predicted]), len(LETTERS)).mean())


def score(questions: Sequence[MMLUQuestion], predicted: Sequence[str | None]) -> MMLUResult:
    """Accuracy, macro-F1 and invalid count; a missing letter scores as "A" (official rule)."""
    letters = [p if p is not None else "A" for p in predicted]
    gold = [q.answer for q in questions]
    per_subject: dict[str, list[bool]] = {}
    for question, letter in zip(questions, letters):
        per_subject.setdefault(question.subject, []).append(letter == question.answer)
    return MMLUResult(len(gold), float(np.mean([g == p for g, p in zip(gold, letters)])),
                      macro_f1(gold, letters), sum(p is None for p in predicted),
                      {s: float(np.mean(v)) for s, v in per_subject.items()})
