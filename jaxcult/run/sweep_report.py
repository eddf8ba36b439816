"""The report of a sweep: `sweep.json` (every cell's per-language mean and std, per-seed target
averages, the paired comparisons), `results.md` (the same as tables, with the command that made
it at the top) and `plots/` (target average per cell with error bars; mean tr(F) per group over
steps for each cell that logged it, every seed's unfreeze events marked)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from jaxcult.eval.paired import compare
from jaxcult.metrics import PERCENT_METRICS
from jaxcult.own_files import read_jsonl
from jaxcult.report import fisher_figure
from jaxcult.rundir import RunDir, write_text_atomic


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT_METRICS else 1.0


def _target_per_seed(summary: dict) -> dict[int, float]:
    metric = summary["primary_metric"]
    return {int(seed): s["average_excluding_source"][metric]
            for seed, s in summary["per_seed"].items() if s["average_excluding_source"]}


def sweep_record(summaries: dict, base, seeds: list[int], config_path: Path, command: str) -> dict:
    first = next(iter(summaries.values()))
    metric = first["primary_metric"]
    cells = {}
    baseline = _target_per_seed(summaries[base])
    for cell, summary in summaries.items():
        per_seed = _target_per_seed(summary)
        cells[cell.name] = {
            "folder": f"cells/{cell.folder}",
            "metrics": summary["metrics"], "std": summary["std"],
            "target_average": summary["average_excluding_source"].get(metric),
            "target_std": summary["average_std"].get(metric),
            "per_seed_target": {str(s): v for s, v in per_seed.items()},
        }
        if cell != base and per_seed and baseline:
            cells[cell.name]["paired"] = asdict(compare(baseline, per_seed))
    return {"config": str(config_path), "command": command, "seeds": seeds, "metric": metric,
            "source_language": first["source_language"], "baseline": base.name, "cells": cells}


def results_markdown(record: dict) -> str:
    metric, scale = record["metric"], _scale(record["metric"])
    unit = " (%)" if scale == 100 else ""
    cells = record["cells"]
    languages = list(next(iter(cells.values()))["metrics"])
    lines = [f"# Sweep results: {metric}{unit}, mean ± sample std over seeds "
             f"{', '.join(map(str, record['seeds']))}", "",
             f"Produced by `{record['command'] or 'jaxcult sweep'}` (config `{record['config']}`).",
             f"Source language `{record['source_language']}`; the target average excludes it.", "",
             "| cell | " + " | ".join(languages) + " | target average |",
             "|---|" + "---|" * (len(languages) + 1)]
    for name, cell in cells.items():
        values = [f"{cell['metrics'][lang][metric] * scale:.2f} ± {cell['std'][lang][metric] * scale:.2f}"
                  for lang in languages]
        average = (f"**{cell['target_average'] * scale:.2f} ± {cell['target_std'] * scale:.2f}**"
                   if cell["target_average"] is not None else "-")
        lines.append(f"| {name} | " + " | ".join(values) + f" | {average} |")
    lines += ["", f"## Paired comparison with `{record['baseline']}` (target average, seed by seed)",
              "", "Difference = cell − baseline on the same seed (same data order and "
              "initialisation); 95% CI of the mean difference (Student t); exact two-sided sign "
              "test (ties dropped).", "",
              "| cell | per-seed differences | mean | 95% CI | wins / losses | sign test p |",
              "|---|---|---|---|---|---|"]
    for name, cell in cells.items():
        paired = cell.get("paired")
        if paired is None:
            continue
        diffs = ", ".join(f"{d * scale:+.2f}" for d in paired["differences"])
        ci = ("n/a" if np.isnan(paired["ci_low"]) else
              f"[{paired['ci_low'] * scale:+.2f}, {paired['ci_high'] * scale:+.2f}]")
        lines.append(f"| {name} | {diffs} | {paired['mean'] * scale:+.2f} | {ci} | "
                     f"{paired['wins']} / {paired['losses']} | {paired['sign_p']:.3g} |")
    return "\n".join(lines) + "\n"


def plot_scores(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = _scale(record["metric"])
    names = [n for n, c in record["cells"].items() if c["target_average"] is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 4))
    for x, name in enumerate(names):
        cell = record["cells"][name]
        ax.errorbar(x, cell["target_average"] * scale, yerr=cell["target_std"] * scale, fmt="o",
                    capsize=4, color="C0")
        seeds = list(cell["per_seed_target"].values())
        ax.scatter([x + 0.12] * len(seeds), [v * scale for v in seeds], s=8, color="grey")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"target average {record['metric']}")
    ax.set_title("mean ± sample std over seeds (grey: each seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cell_fisher(root: Path, seeds: list[int], path: Path) -> bool:
    """Mean tr(F) per group over the seeds' common steps; every seed's unfreeze events."""
    import matplotlib.pyplot as plt

    runs = [RunDir(root).seed_run(s) for s in seeds]
    logs = [read_jsonl(r.fisher, ("step", "trace")) for r in runs]
    steps = sorted(set.intersection(*(set(rec["step"] for rec in log) for log in logs))) \
        if all(logs) else []
    if not steps:
        return False
    by_step = [{rec["step"]: rec["trace"] for rec in log} for log in logs]
    groups = list(by_step[0][steps[0]])
    mean = [{"step": s, "trace": {g: float(np.mean([log[s][g] for log in by_step])) for g in groups}}
            for s in steps]
    events = [e for r in runs for e in read_jsonl(r.events, ("step", "event", "groups"))]
    fig = fisher_figure(mean, events, [], "")
    fig.axes[0].set_title(f"mean tr(F) per group over {len(seeds)} seeds; dotted: a seed "
                          f"opened a group", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(out: Path, config_path: Path, summaries: dict, base, seeds: list[int],
                 command: str) -> dict:
    record = sweep_record(summaries, base, seeds, config_path, command)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep.json", json.dumps(record, indent=1) + "\n")
    write_text_atomic(out / "results.md", results_markdown(record))
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_scores(record, plots / "sweep-scores.png")
    for cell in summaries:
        plot_cell_fisher(out / "cells" / cell.folder, seeds, plots / f"fisher-{cell.folder}.png")
    return record
