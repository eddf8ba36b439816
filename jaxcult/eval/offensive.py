"""Offensive-language classification by a causal LM (Surveys→Narratives' evaluation).

A task's labels are its choices (`jaxcult.data.offensive`): by default the paper's binary
question (`PROMPT`: "1" offensive, "2" not offensive), or the label set and prompt a task
declares. The model's answer is read either

- `generate` (the paper): greedy decoding (10 new tokens), the first line parsed — its first
  number names the label with that answer (a number that is no label's answer: no answer),
  else the label whose word matches (whole words, the longest match wins, so "not offensive"
  beats "offensive"); anything else is a parse failure, counted wrong for its gold class (no
  class gains a false positive);
- `logprob`: the log-likelihoods of each label's answer (" 1", " 2", ...) as the continuation
  of the prompt; the likeliest one is the answer (no parse failures).

The score of a task is macro-F1 over its labels (F1 = 2TP / (2TP + FP + FN) per label, 0 for a
label with no gold and no predicted example, as scikit-learn's default).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from jaxcult.config import GenerationConfig
from jaxcult.data.offensive import OFFENSIVE_CHOICES, OFFICIAL_OFFENSIVE_CHOICES, Choice, Example
from jaxcult.eval.classes import f1_by_class
from jaxcult.eval.survey_answers import answer_line
from jaxcult.generation.api import generate
from jaxcult.generation.scoring import option_logprobs

PROMPT = ('### Question: Is this sentence offensive? {text}. Answer "1. Offensive" or '
          '"2. Not offensive", without explanation. ### Answer:')
OPTIONS = tuple(f" {c.answer}" for c in OFFENSIVE_CHOICES)   # offensive, not offensive
MODES = ("generate", "logprob")
_NUMBER = re.compile(r"(?<![\d.])\d+(?!\d|\.\d)")


def parse_choice(text: str, choices: Sequence[Choice] = OFFENSIVE_CHOICES):
    """The label a completion names (module docstring), or None (no answer)."""
    line = answer_line(text)
    number = _NUMBER.search(line)
    if number is not None:
        return next((c.label for c in choices if c.answer == number.group()), None)
    found = [(len(word), c.label) for c in choices for word in c.words
             if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", line, re.IGNORECASE)]
    if not found:
        return None
    longest = max(length for length, _ in found)
    labels = {label for length, label in found if length == longest}
    return labels.pop() if len(labels) == 1 else None


def parse_choice_official(text: str, choices: Sequence[Choice] = OFFICIAL_OFFENSIVE_CHOICES):
    """The official evaluation's reading (`official_quirks`): the first whitespace-separated
    word of the answer, "1" when there is none, lowercased; the first label (in declared
    order) whose answer or one of whose words is a substring of it (so "non-offensive" is
    offensive: "offensive" is checked first); anything else is no answer (a miss of its gold
    class, as the official F1 over the task's labels scores it)."""
    words = text.split()
    word = (words[0] if words else "1").lower()
    return next((c.label for c in choices
                 if c.answer.lower() in word or any(w in word for w in c.words)), None)


def parse_offensive(text: str) -> bool | None:
    """True (offensive), False (not offensive) or None (no answer) from a completion."""
    return parse_choice(text, OFFENSIVE_CHOICES)


def parse_offensive_official(text: str) -> bool | None:
    return parse_choice_official(text, OFFICIAL_OFFENSIVE_CHOICES)


def f1_scores(gold: Sequence, predicted: Sequence, labels: Sequence = (True, False)) -> dict:
    """Per-label F1; a None prediction is a false negative of its gold label only."""
    index = {label: i for i, label in enumerate(labels)}
    f1 = f1_by_class(np.array([index.get(g, -1) for g in gold]),
                     np.array([index.get(p, -1) for p in predicted]), len(labels))
    return dict(zip(labels, f1.tolist()))


def macro_f1(gold: Sequence, predicted: Sequence, labels: Sequence = (True, False)) -> float:
    return float(np.mean(list(f1_scores(gold, predicted, labels).values())))


def label_name(label: bool | str) -> str:
    """A label as a JSON key: the binary task's True / False as offensive / not offensive."""
    if isinstance(label, bool):
        return "offensive" if label else "not offensive"
    return label


@dataclass
class TaskResult:
    task: str
    examples: int
    macro_f1: float
    accuracy: float
    parse_failure_rate: float
    predicted: dict[str, float]   # share of examples answered with each label (a collapse check)


def predict(model, tokenizer, examples: Sequence[Example], *, mode: str = "generate",
            prompt: str = PROMPT, config: GenerationConfig = GenerationConfig(),
            on_batch: Callable[[int], None] | None = None, official_quirks: bool = False,
            choices: Sequence[Choice] = OFFENSIVE_CHOICES) -> list:
    """The model's answer (a label of `choices`, or None) for each example (module
    docstring); `official_quirks` decodes one token and reads it as the official code does
    (`parse_choice_official`)."""
    prompts = [prompt.format(text=e.text) for e in examples]
    if mode == "generate":
        if official_quirks:
            config = config.model_copy(update={"max_new_tokens": 1})
        completions = generate(model, tokenizer, prompts, config, on_batch=on_batch)
        if not official_quirks:
            return [parse_choice(c.text, choices) for c in completions]
        official = OFFICIAL_OFFENSIVE_CHOICES if choices is OFFENSIVE_CHOICES else choices
        return [parse_choice_official(c.text, official) for c in completions]
    if mode != "logprob":
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, found {mode!r}")
    options = [tuple(f" {c.answer}" for c in choices)] * len(prompts)
    logps = option_logprobs(model, tokenizer, prompts, options, config, add_special_tokens=True,
                            on_batch=on_batch)
    return [choices[int(np.argmax(logp))].label for logp in logps]


def score_task(task: str, examples: Sequence[Example], predicted: Sequence,
               labels: Sequence = (True, False)) -> TaskResult:
    gold = [e.label for e in examples]
    count = len(gold)
    return TaskResult(task, count, macro_f1(gold, predicted, labels),
                      sum(g == p for g, p in zip(gold, predicted)) / count,
                      sum(p is None for p in predicted) / count,
                      {label_name(label): sum(p == label for p in predicted) / count
                       for label in labels})


def sample_examples(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, drawn without replacement (seeded), in file order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = np.random.default_rng(seed).choice(len(examples), size=limit, replace=False)
    return [examples[i] for i in sorted(keep)]
