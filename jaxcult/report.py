"""Plots and the markdown report of a run, rebuilt from its JSONL files and summary.json."""

from __future__ import annotations

from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.metrics import PERCENT_METRICS, scalar_metrics
from jaxcult.own_files import read_json_object, read_jsonl
from jaxcult.rundir import RunDir, write_atomic, write_text_atomic


def save_figure(fig, path: Path) -> None:
    """A PNG written whole or not at all (a full disk keeps the previous plot)."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))


SUMMARY_KEYS = ("task", "source_language", "metrics", "average_excluding_source")


def _metric(summary: dict) -> str:
    """The metric plots and tables show: the task's primary metric (older runs: accuracy)."""
    return summary.get("primary_metric", "accuracy")


def fisher_figure(fisher: list[dict], events: list[dict], validation: list[dict], metric: str):
    """tr(F) per group over steps, coloured by depth (dark = low, light = high), each unfreeze
    event a labelled vertical line, the validation metric on a second axis, the legend outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    groups = [g for g in (fisher[0]["trace"] if fisher else {}) if g != "head"]
    colours = matplotlib.colormaps["viridis"]
    for depth, group in enumerate(groups):
        ax.plot([r["step"] for r in fisher], [r["trace"][group] for r in fisher], lw=1.2,
                color=colours(depth / max(len(groups) - 1, 1)), label=group)
    top = ax.get_ylim()[1] if fisher else 1.0
    for event in events:
        if event.get("event") == "unfreeze" and event["step"] > 0:
            ax.axvline(event["step"], color="grey", ls=":", lw=0.8)
            label = ", ".join(g.rsplit("/", 1)[-1] for g in event["groups"])
            ax.text(event["step"], top, f" {label}", rotation=90, va="top", ha="right",
                    fontsize=7, color="dimgrey")
    ax.set_xlabel("step")
    ax.set_ylabel("tr(F)")
    ax.set_yscale("log" if fisher else "linear")
    ax.set_title("tr(F) per group (dark: lower layers, light: upper); dotted: group opened")
    handles, labels = ax.get_legend_handles_labels()
    if validation:
        twin = ax.twinx()
        values = [r.get(metric) for r in validation]
        line, = twin.plot([r["step"] for r in validation], values, "k-o", ms=3,
                          label=f"validation {metric}")
        if metric in PERCENT_METRICS:
            twin.set_ylim(0, 1.02)
        twin.set_ylabel(f"validation {metric}")
        handles, labels = [*handles, line], [*labels, line.get_label()]
    if handles:  # outside the axes, so it never hides a curve
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    fig.tight_layout()
    return fig


def _plot_fisher(run: RunDir, fisher: list[dict], events: list[dict], validation: list[dict],
                 metric: str) -> Path:
    import matplotlib.pyplot as plt

    fig = fisher_figure(fisher, events, validation, metric)
    path = run.plots / "fisher.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def _plot_curves(run: RunDir, train: list[dict], validation: list[dict], metric: str) -> Path:
    """Training loss and accuracy, and the validation metric, over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in train]
    loss_ax.plot(steps, [r.get("loss") for r in train], label="train loss")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8)
    score_ax.plot(steps, [r.get("accuracy") for r in train], label="train accuracy (batch)")
    if validation:
        score_ax.plot([r["step"] for r in validation], [r.get(metric) for r in validation], "k-o",
                      ms=3, label=f"validation {metric}")
    score_ax.set_xlabel("step")
    score_ax.legend(fontsize=8)
    path = run.plots / "curves.png"
    fig.tight_layout()
    save_figure(fig, path)
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
    save_figure(fig, path)
    plt.close(fig)
    return path


def by_type_figure(tables: dict[str, dict[str, dict]], title: str):
    """Grouped bars: accuracy per question type (x) for each language (one bar colour each),
    from `{language: {type: {"accuracy", "count"}}}` (a VQA evaluator's `by_structural`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = sorted({kind for table in tables.values() for kind in table})
    width = 0.8 / max(len(tables), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(kinds) + 0.15 * len(kinds) * len(tables)), 4))
    for i, (lang, table) in enumerate(tables.items()):
        ax.bar(np.arange(len(kinds)) + (i - (len(tables) - 1) / 2) * width,
               [table.get(k, {}).get("accuracy", np.nan) for k in kinds], width, label=lang)
    counts = next(iter(tables.values()), {})
    ax.set_xticks(range(len(kinds)), [f"{k}\n(n={counts.get(k, {}).get('count', 0)})" for k in kinds])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=min(len(tables), 8))
    fig.tight_layout()
    return fig


def _plot_by_type(run: RunDir, summary: dict) -> list[Path]:
    """plots/by_structural.png (and by_semantic.png) when the evaluator reports per-type scores."""
    import matplotlib.pyplot as plt

    written = []
    for field in ("by_structural", "by_semantic"):
        tables = {lang: m[field] for lang, m in summary["metrics"].items() if m.get(field)}
        if tables:
            fig = by_type_figure(tables, f"accuracy per {field[3:]} type")
            path = run.plots / f"{field}.png"
            save_figure(fig, path)
            plt.close(fig)
            written.append(path)
    return written


def write_report(root: Path) -> list[Path]:
    """(Re)generate plots/fisher.png, eval.png, curves.png (by_structural.png and
    by_semantic.png for per-type evaluators) and report.md; returns the paths."""
    run = RunDir(root)
    if not run.summary.exists():
        raise UserError(f"{root}: no summary.json (the run has not finished)")
    summary = read_json_object(run.summary, SUMMARY_KEYS)  # every input read before any output
    fisher = read_jsonl(run.fisher, ("step", "trace"))
    events = read_jsonl(run.events, ("step", "event", "groups", "reason"))
    records = read_jsonl(run.metrics, ("step", "split"))
    validation = [r for r in records if r.get("split") == "validation"]
    train = [r for r in records if r.get("split") == "train"]
    run.plots.mkdir(exist_ok=True)
    metric = _metric(summary)
    written = [_plot_fisher(run, fisher, events, validation, metric), _plot_eval(run, summary),
               _plot_curves(run, train, validation, metric)]
    by_type = _plot_by_type(run, summary)
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
    best = summary.get("best_step")
    later = [e for e in events if best is not None and e["step"] >= best and e["step"] > 0]
    if later:
        lines += ["", f"The reported scores come from the best validation step ({best}); the "
                  f"{len(later)} unfreezing event(s) at or after it (first at step "
                  f"{later[0]['step']}) did not affect them."]
    lines += ["", "![tr(F)](plots/fisher.png)", "", "![curves](plots/curves.png)", "",
              "![scores](plots/eval.png)", ""]
    lines += [line for path in by_type for line in (f"![{path.stem}](plots/{path.name})", "")]
    write_text_atomic(run.report, "\n".join(lines))
    return [*written, *by_type, run.report]
