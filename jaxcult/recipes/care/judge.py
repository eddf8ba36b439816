"""The seven-metric judge: one forward per (reply, metric), read at the digit after the answer
prefix, the way the paper's G-Eval judge is read but without decoding.

Per metric the judge gives p(1..5) at its answer's first token. From them:
- `digit`: the most probable of the five, what greedy decoding answers when it answers a digit;
- `weighted`: digit × p(digit), the paper's probability-weighted score (p over the whole
  vocabulary, so an unsure judge scores lower);
- `expected`: sum k p(k) / sum p(k), the expected rating over 1-5.
A reply's `normalised` score is the mean of its metrics' weighted scores, the official
definition. A metric whose digits get less than `min_option_mass` is unscorable, and so is the
reply's normalised score (counted, never silently zero).

The post and the reply come first in the judge's prompt and the metric after them, so a local
judge runs the shared part once per reply and only the metric's part per metric
(`generation.shared_prefix`): the same numbers as a forward per metric, ~2-3× less work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxcult.generation.scoring import single_token_options
from jaxcult.generation.shared_prefix import shared_prefix_logprobs, supports
from jaxcult.recipes.care.config import CareJudgeConfig
from jaxcult.recipes.care.rubrics import Metric
from jaxcult.recipes.pairs.config import JudgeConfig
from jaxcult.recipes.pairs.judges import Judgement, LogProbJudge, read_options

TEMPLATE = """\
Below are a post from an online peer-support forum and a reply to it.

Post:
{{prompt}}

Reply:
{{reply}}

Rate one quality of the reply, and only that quality.
Quality: {title}. {definition}
Scale:
{rubric}

Answer with one digit from 1 to 5 and nothing else."""


def _escaped(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def metric_settings(settings: CareJudgeConfig, metric: Metric, model: Any) -> JudgeConfig:
    """The pairs judge's settings that ask `metric`'s question of `model`."""
    template = TEMPLATE.format(title=_escaped(metric.name.replace("_", " ")),
                               definition=_escaped(metric.definition),
                               rubric=_escaped(metric.rubric()))
    extra = {} if not isinstance(model, str) else {"generation": settings.generation}
    return JudgeConfig(model=model, kind="digits", scale=5, template=template,
                       answer_prefix=settings.answer_prefix,
                       min_option_mass=settings.min_option_mass, **extra)


def metric_result(judgement: Judgement) -> dict:
    """One metric's judgement as recorded: digit, its probability, weighted and expected score."""
    if judgement.score is None:
        return {"digit": None, "probability": None, "weighted": None, "expected": None,
                "option_mass": judgement.option_mass, "unscorable": judgement.unscorable}
    probabilities = np.asarray(judgement.probabilities)
    digit = int(probabilities.argmax()) + 1
    return {"digit": digit, "probability": float(probabilities[digit - 1]),
            "weighted": digit * float(probabilities[digit - 1]), "expected": judgement.score,
            "option_mass": judgement.option_mass, "unscorable": None}


def normalised(results: dict[str, dict]) -> float | None:
    """The mean weighted score over the metrics (None if one of them is unscorable)."""
    weighted = [r["weighted"] for r in results.values()]
    return None if any(w is None for w in weighted) else float(np.mean(weighted))


class CareJudge:
    """One judge model asking every metric of every reply."""

    def __init__(self, settings: CareJudgeConfig, metrics: dict[str, Metric], model: Any,
                 make: Callable[[JudgeConfig], Any]) -> None:
        self.metrics = metrics
        self.judges = {name: make(metric_settings(settings, metric, model))
                       for name, metric in metrics.items()}

    def judge(self, items: Sequence[tuple[str, str, str | None]]) -> list[dict]:
        """Per (post text, reply, generation error or None): each metric's result and the
        normalised score."""
        records = [({"prompt": post}, reply, error) for post, reply, error in items]
        first = next(iter(self.judges.values()))
        if isinstance(first, LogProbJudge) and supports(first.model):
            per_item = self._shared(records)
        else:
            per_metric = {name: judge.judge(records) for name, judge in self.judges.items()}
            per_item = [[found[i] for found in per_metric.values()] for i in range(len(items))]
        results = []
        for judgements in per_item:
            metrics = {name: metric_result(j) for name, j in zip(self.judges, judgements)}
            results.append({"metrics": metrics, "normalised": normalised(metrics)})
        return results

    def _shared(self, records: list[tuple[dict, str, str | None]]) -> list[list[Judgement]]:
        """Local judge: the metrics' prompts of one reply share their start (one prefix pass)."""
        judges = list(self.judges.values())
        first = judges[0]
        tokenizer, settings = first.tokenizer, first.settings
        longest = max(settings.generation.length_buckets)
        options = settings.options()
        found: dict[int, list[Judgement]] = {}
        groups, fast, slow = [], [], []
        candidates = None
        for index, (record, reply, error) in enumerate(records):
            if error is not None or not reply.strip():
                found[index] = [Judgement(None, 0.0, error or "empty reply")] * len(judges)
                continue
            prompts = [judge.prompt(record, reply) for judge in judges]
            length = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
            tokens = {tuple(single_token_options(tokenizer, p, options) or ()) for p in prompts}
            if length > longest or len(tokens) != 1 or (candidates is not None
                                                        and tokens != {candidates}):
                slow.append(index)  # too long (unscorable) or options tokenised apart
                continue
            candidates = next(iter(tokens))
            groups.append(prompts)
            fast.append(index)
        if groups:
            logps = shared_prefix_logprobs(first.model, tokenizer, groups, list(candidates),
                                           settings.generation)
            for index, values in zip(fast, logps):
                found[index] = [read_options(judge.settings, np.asarray(row, np.float64))
                                for judge, row in zip(judges, values)]
        if slow:
            each = [judge.judge([records[i] for i in slow]) for judge in judges]
            for n, index in enumerate(slow):
                found[index] = [judgements[n] for judgements in each]
        return [found[i] for i in range(len(records))]
