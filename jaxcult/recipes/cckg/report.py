"""The evaluation report: accuracy per (benchmark, model, condition) and story ratings per
(model, condition), each condition paired with `none` on the same questions (stories) — the
mean difference with its 95% t interval and the exact sign test (on right/wrong answers this
is the exact McNemar test). Written as `evaluate/report.{json,md}`."""

from __future__ import annotations

import json
import math

from jaxcult.eval.paired import compare
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.cckg.evaluate import answers_path
from jaxcult.recipes.cckg.stories import METRICS, stories_path
from jaxcult.recipes.stage_files import read_records
from jaxcult.rundir import write_text_atomic

BASELINE = "none"


def _paired(values: dict[str, dict[int, float]]) -> dict[str, dict]:
    """Each condition against the baseline on the items both have."""
    if BASELINE not in values:
        return {}
    found = {}
    for condition, scores in values.items():
        if condition == BASELINE or not set(scores) & set(values[BASELINE]):
            continue
        c = compare(values[BASELINE], scores)
        found[condition] = {"items": len(c.seeds), "difference": round(c.mean, 4),
                            "ci95": [None if math.isnan(x) else round(x, 4)
                                     for x in (c.ci_low, c.ci_high)],
                            "better": c.wins, "worse": c.losses, "sign_p": round(c.sign_p, 4)}
    return found


def _by_condition(records: list[dict], value) -> dict[str, dict[int, float]]:
    grouped: dict[str, dict[int, float]] = {}
    for record in records:
        got = value(record)
        if got is not None:
            grouped.setdefault(record["condition"], {})[record["item"]] = got
    return grouped


def multiple_choice_table(graphs: Graphs) -> list[dict]:
    rows = []
    for benchmark in graphs.config.evaluate.benchmarks:
        for model in graphs.config.evaluate.models:
            records = [{**r, "item": r["number"]}
                       for r in read_records(answers_path(graphs, benchmark.name, model))]
            correct = _by_condition(records, lambda r: float(r["correct"]))
            paired = _paired(correct)
            for condition, scores in correct.items():
                rows.append({"benchmark": benchmark.name, "model": model,
                             "condition": condition, "questions": len(scores),
                             "accuracy": round(sum(scores.values()) / len(scores), 4),
                             "vs_none": paired.get(condition)})
    return rows


def story_table(graphs: Graphs) -> list[dict]:
    rows = []
    for model in graphs.config.evaluate.models:
        records = read_records(stories_path(graphs, model, ratings=True))
        items = {tuple(k): i for i, k in enumerate(dict.fromkeys(
            (r["country"], r["topic"]) for r in records))}
        records = [{**r, "item": items[r["country"], r["topic"]]} for r in records]

        def mean_rating(record: dict) -> float | None:
            got = list(record["ratings"].values())
            return None if None in got else sum(got) / len(got)

        overall = _by_condition(records, mean_rating)
        paired = _paired(overall)
        for condition in dict.fromkeys(r["condition"] for r in records):
            own = [r for r in records if r["condition"] == condition]
            means = {}
            for metric in METRICS:
                got = [r["ratings"][metric] for r in own if r["ratings"][metric] is not None]
                means[metric] = round(sum(got) / len(got), 3) if got else None
            rows.append({"model": model, "condition": condition, "stories": len(own),
                         "unrated": sum(None in r["ratings"].values() for r in own), **means,
                         "vs_none": paired.get(condition)})
    return rows


def _markdown(choice: list[dict], stories: list[dict]) -> str:
    def versus(row: dict) -> str:
        p = row["vs_none"]
        if p is None:
            return ""
        low, high = (f"{x:+.3f}" if x is not None else "n/a" for x in p["ci95"])
        return f"{p['difference']:+.3f} [{low}, {high}], p={p['sign_p']:.3g}"

    lines = ["# Cultural knowledge graph evaluation", ""]
    if choice:
        lines += ["## Multiple choice", "", "| benchmark | model | condition | questions | "
                  "accuracy | vs none (95% CI, sign p) |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['benchmark']} | {r['model']} | {r['condition']} | {r['questions']} | "
                  f"{r['accuracy']:.3f} | {versus(r)} |" for r in choice]
        lines.append("")
    if stories:
        lines += ["## Stories (judge ratings 1-10)", "", "| model | condition | stories | "
                  "unrated | " + " | ".join(METRICS) + " | vs none (mean of three) |",
                  "|---|---|---|---|" + "---|" * len(METRICS) + "---|"]
        lines += [f"| {r['model']} | {r['condition']} | {r['stories']} | {r['unrated']} | "
                  + " | ".join("n/a" if r[m] is None else f"{r[m]:.2f}" for m in METRICS)
                  + f" | {versus(r)} |" for r in stories]
        lines.append("")
    return "\n".join(lines)


def write_report(graphs: Graphs) -> dict:
    choice = multiple_choice_table(graphs) if graphs.config.evaluate.benchmarks else []
    stories = story_table(graphs) if graphs.config.evaluate.stories else []
    folder = graphs.out / "evaluate"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "report.json", json.dumps(
        {"multiple_choice": choice, "stories": stories}, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(folder / "report.md", _markdown(choice, stories))
    return {"multiple_choice": {f"{r['benchmark']}/{r['model']}/{r['condition']}": r["accuracy"]
                                for r in choice},
            "stories": {f"{r['model']}/{r['condition']}": {m: r[m] for m in METRICS}
                        for r in stories}}
