"""Plots and the markdown report of a run, rebuilt from its JSONL files and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.metrics import PERCENT_METRICS, scalar_metrics
from jaxcult.rundir import RunDir, write_text_atomic


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
    return records


def _metric(summary: dict) -> str:
    """The metric plots and tables show: the task's primary metric (older runs: accuracy)."""
    return summary.get("primary_metric", "accuracy")


def _plot_fisher(run: RunDir, fisher: list[dict], events: list[dict], validation: list[dict],
                 metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    groups = [g for g in (fisher[0]["trace"] if fisher else {}) if g != "head"]
    for group in groups:
        ax.plot([r["step"] for r in fisher], [r["trace"][group] for r in fisher], label=group, lw=1)
    for event in events:
        if event.get("event") == "unfreeze" and event["step"] > 0:
            ax.axvline(event["step"], color="grey", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("tr(F)")
    ax.set_yscale("log" if fisher else "linear")
    ax.set_title("tr(F) per adapter group (dotted: unfreeze events)")
    if validation:
        twin = ax.twinx()
        twin.plot([r["step"] for r in validation], [r.get(metric) for r in validation], "k-o",
                  ms=3, label=f"validation {metric}")
        twin.set_ylabel(f"validation {metric}")
    if groups:
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    path = run.plots / "fisher.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_eval(run: RunDir, summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _metric(summary)
    langs = list(summary["metrics"])
    values = [summary["metrics"][lang].get(metric, 0.0) for lang in langs]
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(langs)), 4))
    colors = ["tab:orange" if lang == summary["source_language"] else "tab:blue" for lang in langs]
    ax.bar(langs, values, color=colors)
    if metric in PERCENT_METRICS:
        ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(f"{summary['task']} on {summary.get('dataset', '')} (orange: source)")
    path = run.plots / "eval.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(root: Path) -> list[Path]:
    """(Re)generate plots/fisher.png, plots/eval.png and report.md; returns the written paths."""
    run = RunDir(root)
    if not run.summary.exists():
        raise UserError(f"{root}: no summary.json (the run has not finished)")
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    fisher, events = read_jsonl(run.fisher), read_jsonl(run.events)
    validation = [r for r in read_jsonl(run.metrics) if r.get("split") == "validation"]
    run.plots.mkdir(exist_ok=True)
    metric = _metric(summary)
    written = [_plot_fisher(run, fisher, events, validation, metric), _plot_eval(run, summary)]
    rows = {lang: scalar_metrics(values) for lang, values in summary["metrics"].items()}
    names = sorted({m for values in rows.values() for m in values})
    lines = [f"# Run report: {root.name}", "", f"Task `{summary['task']}`, source language "
             f"`{summary['source_language']}`, best validation step {summary.get('best_step')}.", "",
             "| language | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label: str, values: dict) -> str:
        cells = [(f"{100 * values[n]:.2f}" if n in PERCENT_METRICS else f"{values[n]:.4g}")
                 if n in values else "" for n in names]
        return f"| {label} | " + " | ".join(cells) + " |"

    for lang, values in rows.items():
        lines.append(row(lang, values))
    if summary["average_excluding_source"]:
        lines.append(row("average excluding source", summary["average_excluding_source"]))
    lines += ["", "## Unfreezing events", ""]
    lines += [f"- step {e['step']}: {', '.join(e['groups'])} ({e['reason']})" for e in events]
    lines += ["", "![tr(F)](plots/fisher.png)", "", "![scores](plots/eval.png)", ""]
    write_text_atomic(run.report, "\n".join(lines))
    return [*written, run.report]
