"""Offensive-language classification by a causal LM (Surveys→Narratives' evaluation).

The prompt is the paper's generative binary question (`PROMPT`); the model's answer is read
either

- `generate` (the paper): greedy decoding (10 new tokens), the first line parsed — "1" or
  "Offensive" → offensive, "2" or "Not offensive" → not offensive; anything else is a parse
  failure, counted wrong for its gold class (no class gains a false positive);
- `logprob`: the log-likelihoods of " 1" and " 2" as the continuation of the prompt; the likelier
  one is the answer (no parse failures).

The score of a task is macro-F1 over the two classes (F1 = 2TP / (2TP + FP + FN) per class,
0 for a class with no gold and no predicted example, as scikit-learn's default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jaxcult.config import GenerationConfig
from jaxcult.data.offensive import Example
from jaxcult.eval.survey_answers import answer_line
from jaxcult.generation.api import generate
from jaxcult.generation.scoring import option_logprobs

PROMPT = ('### Question: is the following sentence offensive: {text}. "1. Offensive", '
          '"2. Not offensive" without explanation. ### Answer:')
OPTIONS = (" 1", " 2")      # offensive, not offensive
MODES = ("generate", "logprob")
_NOT = re.compile(r"\b(not|non|in)[\s-]?offensive\b|\bnot\b", re.IGNORECASE)
_OFFENSIVE = re.compile(r"\boffensive\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])\d+(?!\d|\.\d)")


def parse_offensive(text: str) -> bool | None:
    """True (offensive), False (not offensive) or None (no answer) from a completion."""
    line = answer_line(text)
    number = _NUMBER.search(line)
    if number is not None:
        return {"1": True, "2": False}.get(number.group())
    if _NOT.search(line):
        return False
    if _OFFENSIVE.search(line):
        return True
    return None


def parse_offensive_official(text: str) -> bool | None:
    """The official evaluation's reading (`official_quirks`): the first whitespace-separated
    word of the answer, "1" when there is none; offensive when it contains "1" or "offensive"
    (so "non-offensive" is offensive: the check for "not offensive" comes second), else not
    offensive when it contains "2"; anything else is no answer (a miss of its gold class, as
    the official F1 over the two labels scores it)."""
    words = text.split()
    word = (words[0] if words else "1").lower()
    if "1" in word or "offensive" in word:
        return True
    if "2" in word:
        return False
    return None


def f1_scores(gold: Sequence[bool], predicted: Sequence[bool | None]) -> dict[bool, float]:
    """Per-class F1; a None prediction is a false negative of its gold class only."""
    scores = {}
    for label in (True, False):
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted))
        scores[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return scores


def macro_f1(gold: Sequence[bool], predicted: Sequence[bool | None]) -> float:
    scores = f1_scores(gold, predicted)
    return (scores[True] + scores[False]) / 2


@dataclass
class TaskResult:
    task: str
    examples: int
    macro_f1: float
    accuracy: float
    parse_failure_rate: float
    predicted_offensive: float   # share of examples answered "offensive" (a collapse diagnostic)


def predict(model, tokenizer, examples: Sequence[Example], *, mode: str = "generate",
            prompt: str = PROMPT, config: GenerationConfig = GenerationConfig(),
            on_batch: Callable[[int], None] | None = None,
            official_quirks: bool = False) -> list[bool | None]:
    """The model's answer for each example (module docstring); `official_quirks` decodes one
    token and reads it as the official code does (`parse_offensive_official`)."""
    prompts = [prompt.format(text=e.text) for e in examples]
    if mode == "generate":
        if official_quirks:
            config = config.model_copy(update={"max_new_tokens": 1})
        completions = generate(model, tokenizer, prompts, config, on_batch=on_batch)
        read = parse_offensive_official if official_quirks else parse_offensive
        return [read(c.text) for c in completions]
    if mode != "logprob":
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, found {mode!r}")
    logps = option_logprobs(model, tokenizer, prompts, [OPTIONS] * len(prompts), config,
                            add_special_tokens=True, on_batch=on_batch)
    return [bool(logp[0] >= logp[1]) for logp in logps]


def score_task(task: str, examples: Sequence[Example], predicted: Sequence[bool | None]
               ) -> TaskResult:
    gold = [e.offensive for e in examples]
    count = len(gold)
    return TaskResult(task, count, macro_f1(gold, predicted),
                      sum(g == p for g, p in zip(gold, predicted)) / count,
                      sum(p is None for p in predicted) / count,
                      sum(p is True for p in predicted) / count)


def sample_examples(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, drawn without replacement (seeded), in file order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[i] for i in sorted(keep)]
