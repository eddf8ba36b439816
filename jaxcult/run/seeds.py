"""Multi-seed runs (`trainer.seeds`): one full run per seed in `seed-<n>/`, then mean +- std.

The top-level run directory holds config.yaml and summary.json with, per language and metric,
the mean and the sample standard deviation (n - 1) over seeds, plus every seed's own summary.
`--resume` skips finished seeds and continues an interrupted one from its checkpoints. With
`trainer.vectorize_seeds` the unfinished seeds train together as one vmapped program
(`run.vectorized`), each still writing its own `seed-<n>/`.
"""

from __future__ import annotations

import numpy as np

from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config
from jaxcult.eval import scalar_metrics
from jaxcult.own_files import read_json_object
from jaxcult.report import SUMMARY_KEYS
from jaxcult.run.single import train_one
from jaxcult.run.summary import format_cell
from jaxcult.rundir import RunDir, has_checkpoint, prepare, write_text_atomic


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """The single-seed run of `seed` (the seed axis, `mesh.seed`, belongs to the multi-seed run)."""
    trainer = config.trainer.model_copy(update={"seed": seed, "seeds": None,
                                                "vectorize_seeds": False})
    mesh = config.mesh.model_copy(update={"seed": 1})
    return config.model_copy(update={"trainer": trainer, "mesh": mesh})


def sample_std(values: list[float]) -> float:
    """The sample standard deviation (n - 1), what readers of mean ± std assume; 0 for one seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(summaries: dict[int, dict]) -> dict:
    """Mean and std over seeds of every per-language metric and of the target average."""
    first = next(iter(summaries.values()))
    out = {key: first[key] for key in ("task", "dataset", "evaluator", "source_language",
                                       "primary_metric")}
    out["seeds"] = list(summaries)

    def stats(get) -> tuple[dict, dict]:
        names = scalar_metrics(get(first))
        values = {m: [get(s)[m] for s in summaries.values()] for m in names}
        return ({m: float(np.mean(v)) for m, v in values.items()},
                {m: sample_std(v) for m, v in values.items()})

    out["metrics"], out["std"] = {}, {}
    for lang in first["metrics"]:
        out["metrics"][lang], out["std"][lang] = stats(lambda s, lang=lang: s["metrics"][lang])
    out["average_excluding_source"], out["average_std"] = stats(
        lambda s: s["average_excluding_source"])
    out["per_seed"] = {str(seed): s for seed, s in summaries.items()}
    return out


def format_mean_std(summary: dict) -> str:
    names = sorted({m for values in summary["metrics"].values() for m in values})
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [f"mean +- sample std over seeds {seeds}",
             f"{'language':<20} " + " ".join(f"{n:>22}" for n in names)]

    def row(label: str, mean: dict, std: dict) -> str:
        cells = [f"{format_cell(n, mean[n]).strip()} +- {format_cell(n, std[n]).strip()}" for n in names]
        return f"{label:<20} " + " ".join(f"{c:>22}" for c in cells)

    for lang in summary["metrics"]:
        marker = " (source)" if lang == summary["source_language"] else ""
        lines.append(row(lang, summary["metrics"][lang], summary["std"][lang]) + marker)
    if summary["average_excluding_source"]:
        lines.append(row("average (no source)", summary["average_excluding_source"],
                         summary["average_std"]))
    return "\n".join(lines)


def train_seeds(config: RunConfig, run: RunDir, *, resume: bool = False,
                overwrite: bool = False) -> dict:
    """Train every seed of `trainer.seeds`; returns the aggregate (a signal raises
    `Interrupted` from the seed it stopped)."""
    prepared = False

    def start() -> None:
        """The run's own folder and config.yaml (with `overwrite`, old outputs removed first),
        made once the first seed to train has loaded its data and model: bad input fails before
        anything is deleted, without a build of its own."""
        nonlocal prepared
        if not prepared:
            prepare(run, overwrite=overwrite, resume=resume)
            if not resume:
                write_text_atomic(run.config, dump_config(config))
            prepared = True

    summaries, todo = {}, {}
    for seed in config.trainer.seeds:
        sub = run.seed_run(seed)
        if resume and sub.summary.exists():
            summaries[seed] = read_json_object(sub.summary, SUMMARY_KEYS)
            continue
        started = resume and sub.config.exists() and has_checkpoint(sub)
        if config.trainer.vectorize_seeds:
            todo[seed] = (sub, started)
        else:
            summaries[seed] = train_one(seed_config(config, seed), sub, resume=started,
                                        overwrite=not started, before_writing=start)
    if todo:
        from jaxcult.run.vectorized import train_vectorized

        summaries.update(train_vectorized({seed: seed_config(config, seed) for seed in todo},
                                          {seed: sub for seed, (sub, _) in todo.items()},
                                          started={seed: s for seed, (_, s) in todo.items()},
                                          resume=resume, seed_devices=config.mesh.seed,
                                          before_writing=start))
    start()  # every seed had finished before (a resumed run)
    summaries = {seed: summaries[seed] for seed in config.trainer.seeds}
    result = aggregate(summaries)
    run.write_summary(result)
    return result
