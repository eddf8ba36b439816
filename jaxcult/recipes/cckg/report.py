"""The evaluation report: accuracy per (benchmark, model, condition) and story ratings per
(model, condition); paired comparisons on the same questions (stories): each condition with
none, a native graph with the English one, the adapter with each retrieval condition — the
mean difference with its 95% t interval and the exact sign test (on right/wrong answers this
is the exact McNemar test). Written as `evaluate/report.{json,md}`."""

from __future__ import annotations

import json
import math

from jaxcult.eval.paired import compare
from jaxcult.recipes.cckg.config import ENGLISH
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.cckg.evaluate import answers_path
from jaxcult.recipes.cckg.knowledge import UNITS
from jaxcult.recipes.cckg.stories import METRICS, stories_path
from jaxcult.recipes.stage_files import read_records
from jaxcult.rundir import write_text_atomic

BASELINE, ADAPTER = "none", "adapter"


def _compared(a: dict[int, float], b: dict[int, float]) -> dict:
    c = compare(a, b)
    return {"items": len(c.seeds), "difference": round(c.mean, 4),
            "ci95": [None if math.isnan(x) else round(x, 4) for x in (c.ci_low, c.ci_high)],
            "better": c.wins, "worse": c.losses, "sign_p": round(c.sign_p, 4)}


def _pairs(conditions: list[str]) -> list[tuple[str, str]]:
    """What is compared: each condition with none; a native graph with the English one of
    the same unit; the adapter with each retrieval condition."""
    pairs = [(BASELINE, c) for c in conditions if c != BASELINE and BASELINE in conditions]
    for condition in conditions:
        kind, _, language = condition.partition(":")
        if language and language != ENGLISH and f"{kind}:{ENGLISH}" in conditions:
            pairs.append((f"{kind}:{ENGLISH}", condition))
    if ADAPTER in conditions:
        pairs += [(c, ADAPTER) for c in conditions if c.partition(":")[0] in UNITS]
    return pairs


def _comparisons(values: dict[str, dict[int, float]]) -> list[dict]:
    """B against A on the items both have, for each pair `_pairs` names."""
    return [{"a": a, "b": b, **_compared(values[a], values[b])}
            for a, b in _pairs(list(values)) if set(values[a]) & set(values[b])]


def _by_condition(records: list[dict], value) -> dict[str, dict[int, float]]:
    grouped: dict[str, dict[int, float]] = {}
    for record in records:
        got = value(record)
        if got is not None:
            grouped.setdefault(record["condition"], {})[record["item"]] = got
    return grouped


def multiple_choice_table(graphs: Graphs) -> tuple[list[dict], list[dict]]:
    """Accuracy per (benchmark, model, condition), and the paired comparisons."""
    rows, comparisons = [], []
    for benchmark in graphs.config.evaluate.benchmarks:
        for model in graphs.config.evaluate.models:
            records = [{**r, "item": r["number"]}
                       for r in read_records(answers_path(graphs, benchmark.name, model))]
            correct = _by_condition(records, lambda r: float(r["correct"]))
            for condition, scores in correct.items():
                rows.append({"benchmark": benchmark.name, "model": model,
                             "condition": condition, "questions": len(scores),
                             "accuracy": round(sum(scores.values()) / len(scores), 4)})
            comparisons += [{"benchmark": benchmark.name, "model": model, **c}
                            for c in _comparisons(correct)]
    return rows, comparisons


def story_table(graphs: Graphs) -> tuple[list[dict], list[dict]]:
    """Mean rating per (model, condition) and metric, and the paired comparisons of the mean
    of the three ratings per story."""
    rows, comparisons = [], []
    for model in graphs.config.evaluate.models:
        records = read_records(stories_path(graphs, model, ratings=True))
        items = {tuple(k): i for i, k in enumerate(dict.fromkeys(
            (r["country"], r["topic"]) for r in records))}
        records = [{**r, "item": items[r["country"], r["topic"]]} for r in records]

        def mean_rating(record: dict) -> float | None:
            got = list(record["ratings"].values())
            return None if None in got else sum(got) / len(got)

        comparisons += [{"model": model, **c}
                        for c in _comparisons(_by_condition(records, mean_rating))]
        for condition in dict.fromkeys(r["condition"] for r in records):
            own = [r for r in records if r["condition"] == condition]
            means = {}
            for metric in METRICS:
                got = [r["ratings"][metric] for r in own if r["ratings"][metric] is not None]
                means[metric] = round(sum(got) / len(got), 3) if got else None
            rows.append({"model": model, "condition": condition, "stories": len(own),
                         "unrated": sum(None in r["ratings"].values() for r in own), **means})
    return rows, comparisons


def _comparison_lines(comparisons: list[dict], first: str) -> list[str]:
    lines = [f"| {first} | B | against A | difference B - A | 95% CI | B better / worse | "
             f"sign p |", "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        low, high = ("n/a" if x is None else f"{x:+.3f}" for x in c["ci95"])
        lines.append(f"| {c.get('benchmark', c['model'])} | {c['b']} | {c['a']} | "
                     f"{c['difference']:+.3f} | [{low}, {high}] | {c['better']} / "
                     f"{c['worse']} | {c['sign_p']:.3g} |")
    return lines + [""]


def _markdown(choice: tuple[list[dict], list[dict]], stories: tuple[list[dict], list[dict]]
              ) -> str:
    lines = ["# Cultural knowledge graph evaluation", ""]
    if choice[0]:
        lines += ["## Multiple choice", "", "| benchmark | model | condition | questions | "
                  "accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {r['benchmark']} | {r['model']} | {r['condition']} | {r['questions']} | "
                  f"{r['accuracy']:.3f} |" for r in choice[0]]
        lines += ["", "Paired on the same questions (right = 1, wrong = 0; the sign test is "
                  "the exact McNemar test):", ""] + _comparison_lines(choice[1], "benchmark")
    if stories[0]:
        lines += ["## Stories (judge ratings 1-10)", "", "| model | condition | stories | "
                  "unrated | " + " | ".join(METRICS) + " |",
                  "|---|---|---|---|" + "---|" * len(METRICS)]
        lines += [f"| {r['model']} | {r['condition']} | {r['stories']} | {r['unrated']} | "
                  + " | ".join("n/a" if r[m] is None else f"{r[m]:.2f}" for m in METRICS)
                  + " |" for r in stories[0]]
        lines += ["", "Paired on the same (country, topic), the mean of the three ratings "
                  "(stories with all three):", ""] + _comparison_lines(stories[1], "model")
    return "\n".join(lines)


def write_report(graphs: Graphs) -> dict:
    settings = graphs.config.evaluate
    choice = multiple_choice_table(graphs) if settings.benchmarks else ([], [])
    stories = story_table(graphs) if settings.stories else ([], [])
    folder = graphs.out / "evaluate"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "report.json", json.dumps(
        {"multiple_choice": choice[0], "multiple_choice_comparisons": choice[1],
         "stories": stories[0], "story_comparisons": stories[1]},
        indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(folder / "report.md", _markdown(choice, stories))
    return {"multiple_choice": {f"{r['benchmark']}/{r['model']}/{r['condition']}": r["accuracy"]
                                for r in choice[0]},
            "stories": {f"{r['model']}/{r['condition']}": {m: r[m] for m in METRICS}
                        for r in stories[0]}}
