"""The care report: a culture × strategy table of every metric and the normalised score,
paired comparisons with the baseline, how often replies mention the post's cultural signals,
and the two judges' agreement when two are configured.

Written to `report.json`, `report.md` and `plots/{normalised,metrics}.png`. Scores are the
primary judge's; a metric's cell is the mean expected rating (1-5) of its scorable replies, the
normalised cell the mean of the official normalised score. Paired comparisons take, per post,
a strategy's normalised score minus the baseline's on the same post (posts both have), with a
95% t interval and the exact sign test (`jaxcult.eval.paired`). A reply mentions a signal when
it contains one of the signal phrase's content words (4+ letters, not a stop word; any run of
non-Latin letters), compared case-insensitively.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from jaxcult.eval.agreement import kendall_tau_b, spearman
from jaxcult.eval.paired import compare
from jaxcult.recipes.care.adapt import LABELS
from jaxcult.recipes.care.replies import key
from jaxcult.recipes.care.run import CareRun
from jaxcult.recipes.care.schema import AnnotatedPost
from jaxcult.recipes.care.strategies import BASELINE
from jaxcult.recipes.stage_files import read_records
from jaxcult.rundir import write_text_atomic

ALL = "all"
STOP_WORDS = frozenset("""about after again also because been before being could does doing down
from have having here into just more most much only other over same should some such than that
their them then there these they this those through very want were what when where which while
with would your yours really""".split())
_WORD = re.compile(r"\w+")


def content_words(phrase: str) -> set[str]:
    words = {w.casefold() for w in _WORD.findall(phrase)}
    return {w for w in words if (len(w) >= 4 and w not in STOP_WORDS)
            or (not w.isascii() and len(w) >= 2)}


def mentions_signal(reply: str, post: AnnotatedPost) -> bool | None:
    """Whether the reply mentions one of the post's cultural signals (None: the post has none)."""
    words = set().union(*(content_words(s.phrase) for s in post.signals)) if post.signals else set()
    if not words:
        return None
    text = reply.casefold()
    return any(word in text for word in words)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _records(run: CareRun) -> tuple[list[dict], dict[tuple, str]]:
    """Every judgement record (prompted strategies and adapters) and every reply's text."""
    judged, replies = [], {}
    for folder in (run.out, *(run.out / stage for stage in LABELS)):
        judged += read_records(folder / "judgements.jsonl")
        replies.update({key(r): r["reply"] for r in read_records(folder / "replies.jsonl")})
    return judged, replies


def _cell(records: list[dict], judge: str, metrics: list[str], posts: dict, replies: dict) -> dict:
    scores = [r["judges"][judge] for r in records]
    said = [mentions_signal(replies[key(r)], posts[r["culture"], r["post_id"]]) for r in records]
    said = [s for s in said if s is not None]
    return {"replies": len(records),
            "unscorable": sum(s["normalised"] is None for s in scores),
            **{m: _mean([s["metrics"][m]["expected"] for s in scores
                         if s["metrics"][m]["expected"] is not None]) for m in metrics},
            "normalised": _mean([s["normalised"] for s in scores if s["normalised"] is not None]),
            "mentions_signal": _mean([float(s) for s in said])}


def _paired(records: list[dict], judge: str, strategy: str) -> dict | None:
    def by_post(name: str) -> dict[tuple, float]:
        return {(r["culture"], r["post_id"]): r["judges"][judge]["normalised"] for r in records
                if r["strategy"] == name and r["judges"][judge]["normalised"] is not None}

    base, other = by_post(BASELINE), by_post(strategy)
    common = sorted(set(base) & set(other))
    if not common:
        return None
    found = compare({i: base[p] for i, p in enumerate(common)},
                    {i: other[p] for i, p in enumerate(common)})
    finite = lambda x: None if math.isnan(x) else round(x, 4)  # noqa: E731
    return {"posts": len(common), "mean_difference": round(found.mean, 4),
            "ci95": [finite(found.ci_low), finite(found.ci_high)], "wins": found.wins,
            "losses": found.losses, "sign_test_p": round(found.sign_p, 4)}


def _agreement(records: list[dict], judges: list[str], metrics: list[str]) -> dict:
    first, second = judges
    found = {}
    for metric in [*metrics, "normalised"]:
        def score(r: dict, judge: str) -> float | None:
            given = r["judges"][judge]
            return given["normalised"] if metric == "normalised" else (
                given["metrics"][metric]["expected"])

        pairs = [(score(r, first), score(r, second)) for r in records]
        pairs = [p for p in pairs if None not in p]
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        found[metric] = {"replies": len(pairs), "spearman": spearman(a, b),
                         "kendall_tau_b": kendall_tau_b(a, b)}
    return found


def _markdown(report: dict, strategies: list[str], metrics: list[str]) -> str:
    def cell(value) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = [f"# Emotional-support report ({report['name']})", "",
             f"Judge: {report['judge']}; score per metric = mean expected rating 1-5; "
             f"normalised = mean of digit × p(digit) over the metrics (official).", ""]
    header = ["culture", "strategy", "n", *metrics, "normalised", "mentions signal"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for culture, row in report["table"].items():
        for strategy in strategies:
            if strategy in row:
                c = row[strategy]
                lines.append("| " + " | ".join([culture, strategy, str(c["replies"]),
                                                 *(cell(c[m]) for m in metrics),
                                                 cell(c["normalised"]),
                                                 cell(c["mentions_signal"])]) + " |")
    lines += ["", "Paired with the baseline (normalised score, same posts):", "",
              "| culture | strategy | posts | mean diff | 95% CI | wins/losses | sign p |",
              "|---|---|---|---|---|---|---|"]
    for culture, row in report["paired_with_baseline"].items():
        for strategy, p in row.items():
            if p is not None:
                low, high = p["ci95"]
                lines.append(f"| {culture} | {strategy} | {p['posts']} | "
                             f"{p['mean_difference']:+.3f} | [{cell(low)}, {cell(high)}] | "
                             f"{p['wins']}/{p['losses']} | {p['sign_test_p']:.3f} |")
    if report.get("agreement"):
        lines += ["", "Judge agreement (Spearman / Kendall tau-b):", ""]
        for metric, a in report["agreement"].items():
            lines.append(f"- {metric}: {cell(a['spearman'])} / {cell(a['kendall_tau_b'])} "
                         f"({a['replies']} replies)")
    return "\n".join(lines) + "\n"


def _plots(report: dict, strategies: list[str], metrics: list[str], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxcult.report import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    cultures = list(report["table"])
    grid = np.array([[np.nan if report["table"][c].get(s, {}).get("normalised") is None
                      else report["table"][c][s]["normalised"] for s in strategies]
                     for c in cultures])
    fig, ax = plt.subplots(figsize=(1.4 * len(strategies) + 2, 0.6 * len(cultures) + 1.6))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right")
    ax.set_yticks(range(len(cultures)), cultures)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax, label="normalised score")
    fig.tight_layout()
    save_figure(fig, folder / "normalised.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * len(strategies) / 3), 4))
    width = 0.8 / len(strategies)
    for n, strategy in enumerate(strategies):
        values = [report["table"][ALL].get(strategy, {}).get(m) for m in metrics]
        ax.bar(np.arange(len(metrics)) + n * width, [np.nan if v is None else v for v in values],
               width, label=strategy)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=30, ha="right")
    ax.set_ylabel("expected rating (1-5)")
    ax.set_ylim(1, 5)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, folder / "metrics.png")
    plt.close(fig)
    return ["plots/normalised.png", "plots/metrics.png"]


def write_report(run: CareRun) -> dict:
    """The report stage: reads every judgement, writes report.json, report.md and plots."""
    from jaxcult.errors import UserError

    judged, replies = _records(run)
    if not judged:
        raise UserError(f"{run.out / 'judgements.jsonl'}: no judgements; run `jaxcult care "
                        f"judge` first")
    judges = list(run.judge_specs())
    metrics = list(run.metrics)
    posts = {(p.culture, p.post_id): p for p in run.posts}
    judged = [r for r in judged if (r["culture"], r["post_id"]) in posts]
    present = {r["strategy"] for r in judged}
    strategies = [s for s in [*run.config.strategies, *LABELS.values()] if s in present]
    table, paired = {}, {}
    for culture in [*run.config.cultures, ALL]:
        rows = [r for r in judged if culture in (ALL, r["culture"])]
        table[culture] = {s: _cell([r for r in rows if r["strategy"] == s], judges[0], metrics,
                                   posts, replies)
                          for s in strategies if any(r["strategy"] == s for r in rows)}
        paired[culture] = {s: _paired(rows, judges[0], s) for s in strategies if s != BASELINE}
    report = {"name": run.config.name, "judge": judges[0], "metrics": metrics,
              "strategies": strategies, "table": table, "paired_with_baseline": paired}
    if len(judges) == 2:
        report["agreement"] = _agreement(judged, judges, metrics)
    report["plots"] = _plots(report, strategies, metrics, run.out / "plots")
    write_text_atomic(run.out / "report.json", json.dumps(report, indent=1,
                                                          ensure_ascii=False) + "\n")
    write_text_atomic(run.out / "report.md", _markdown(report, strategies, metrics))
    overall = table[ALL]
    return {"replies": len(judged),
            "normalised": {s: overall[s]["normalised"] for s in strategies},
            "vs_baseline": {s: (p or {}).get("mean_difference") for s, p in paired[ALL].items()},
            **({"agreement_normalised": report["agreement"]["normalised"]}
               if "agreement" in report else {})}
