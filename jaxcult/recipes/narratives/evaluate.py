"""The evaluate stage of `jaxcult narratives`: every model row (the base model, then each
culture's adapter) on every culture's offensive-language tasks.

M[row, culture] is the mean macro-F1 over that culture's tasks; C-Dist (`cultural_
distinctiveness`) is computed over the adapter rows once every culture has one. Each row's
results are saved as soon as they are done (`evaluations/<scenario>/<row>.json`, with the
settings they were made with) and reused by a later call with the same settings.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from jaxcult.data.offensive import read_culture_tasks
from jaxcult.errors import UserError
from jaxcult.eval.offensive import PROMPT, predict, sample_examples, score_task
from jaxcult.eval.survey import cultural_distinctiveness
from jaxcult.own_files import read_json_object
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

BASE = "base"


def _tasks(run) -> dict[str, dict]:
    settings = run.config.evaluate
    if run.config.tasks is None:
        raise UserError("narratives evaluate: set `tasks` (folder of <culture>/<task>.jsonl)")
    root = run.path(run.config.tasks)
    return {c.name: {name: sample_examples(examples, settings.max_examples, settings.seed)
                     for name, examples in read_culture_tasks(root / c.name).items()}
            for c in run.config.cultures}


def _rows(run) -> dict[str, Path | None]:
    """Row name -> PEFT adapter folder (None: the base model)."""
    rows: dict[str, Path | None] = {BASE: None} if run.config.evaluate.base else {}
    for culture in run.config.cultures:
        peft = run.adapter_dir(culture) / "peft"
        if (peft / "adapter_config.json").is_file():
            rows[culture.name] = peft
        elif run.config.train is not None:
            raise UserError(f"{peft}: no adapter of {culture.name}; run `jaxcult narratives "
                            f"train` first (with train.export: true)")
    if not rows:
        raise UserError("narratives evaluate: nothing to evaluate (no adapters and evaluate.base "
                        "is false)")
    return rows


def _base_model(run) -> str:
    settings = run.config.evaluate
    if settings.model is not None:
        return settings.model
    if run.config.train is None:
        raise UserError("narratives evaluate: set evaluate.model (no train section names it)")
    return run.training_config(run.config.cultures[0]).model.name


def _settings(run, model: str) -> dict:
    """What a row's scores depend on; the decoding settings as resolved with the model's own
    generation_config.json."""
    from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults

    settings = run.config.evaluate
    generation = with_model_defaults(settings.generation, load_generation_defaults(model))
    return {"model": model, "mode": settings.mode, "prompt": settings.prompt or PROMPT,
            "max_examples": settings.max_examples, "seed": settings.seed,
            "official_quirks": settings.official_quirks,
            "generation": generation.model_dump(mode="json")}


def _evaluate_row(model, tokenizer, tasks: dict, settings: dict, label: str) -> dict:
    from jaxcult.config import GenerationConfig

    config = GenerationConfig.model_validate(settings["generation"])
    scores = {}
    for culture, culture_tasks in tasks.items():
        for name, examples in culture_tasks.items():
            started = time.perf_counter()
            predicted = predict(model, tokenizer, examples, mode=settings["mode"],
                                prompt=settings["prompt"], config=config,
                                official_quirks=settings["official_quirks"])
            result = score_task(name, examples, predicted)
            scores.setdefault(culture, []).append(vars(result))
            log.info(f"narratives evaluate: {label} on {culture}/{name}: macro-F1 "
                  f"{result.macro_f1:.3f} ({len(examples)} examples, "
                  f"{time.perf_counter() - started:.1f} s)")
    return scores


def evaluate_matrix(run) -> dict:
    from flax import nnx

    from jaxcult.hub.peft_format import import_peft
    from jaxcult.run.generate import load_generation_model

    tasks, rows = _tasks(run), _rows(run)
    model_name = _base_model(run)
    settings = _settings(run, model_name)
    folder = run.out / "evaluations" / run.scenario
    folder.mkdir(parents=True, exist_ok=True)
    loaded = None
    results = {}
    for row, adapter in rows.items():
        path = folder / f"{row}.json"
        saved = read_json_object(path) if path.is_file() else {}
        if saved.get("settings") == settings and saved.get("adapter") == str(adapter or ""):
            results[row] = saved["tasks"]
            continue
        if loaded is None:
            loaded = load_generation_model(model_name, None, merge=False)
        model, tokenizer = loaded
        if adapter is not None:
            model = nnx.clone(model)
            import_peft(model, adapter)
        results[row] = _evaluate_row(model, tokenizer, tasks, settings, row)
        write_text_atomic(path, json.dumps({"settings": settings, "adapter": str(adapter or ""),
                                            "tasks": results[row]}, indent=1, ensure_ascii=False))
    return write_matrix(run, results)


def write_matrix(run, results: dict[str, dict]) -> dict:
    """`matrix-<scenario>.{json,tsv,png}` from per-row task scores; returns the summary."""
    cultures = [c.name for c in run.config.cultures]
    matrix = np.array([[np.mean([t["macro_f1"] for t in results[row][c]]) for c in cultures]
                       for row in results])
    summary = {"rows": list(results), "cultures": cultures,
               "matrix": [[round(float(v), 4) for v in line] for line in matrix]}
    adapters = [list(results).index(c) for c in cultures if c in results]
    if len(adapters) == len(cultures):
        c_dist, n = cultural_distinctiveness(matrix[adapters])
        summary["c_dist"] = round(c_dist, 4)
        summary["n"] = dict(zip(cultures, (round(float(v), 4) for v in n)))
    stem = run.out / f"matrix-{run.scenario}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(
        {**summary, "tasks": results}, indent=1, ensure_ascii=False))
    lines = ["model\t" + "\t".join(cultures)]
    lines += [f"{row}\t" + "\t".join(f"{v:.4f}" for v in line) for row, line in zip(results, matrix)]
    write_text_atomic(stem.with_suffix(".tsv"), "\n".join(lines) + "\n")
    plot_matrix(matrix, list(results), cultures, stem.with_suffix(".png"),
                f"{run.config.name} ({run.scenario}): macro-F1"
                + (f", C-Dist {summary['c_dist']:.3f}" if "c_dist" in summary else ""))
    return summary


def plot_matrix(matrix: np.ndarray, rows: list[str], cultures: list[str], path: Path,
                title: str) -> None:
    """A heatmap of the matrix with its values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(cultures) + 2.5, 0.6 * len(rows) + 1.8))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cultures)), cultures, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("tasks of culture")
    ax.set_ylabel("model (adapter)")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                color="white" if value < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
