"""The evaluate stage of `jaxcult narratives`: every model row (the base model, each
culture's adapter, then the all-culture `combined` adapter when built) on every culture's
offensive-language tasks, and on MMLU when the config has an `mmlu` section.

M[row, culture] is the mean macro-F1 over that culture's tasks; C-Dist (`cultural_
distinctiveness`) is computed over the culture adapters' rows once every culture has one.
Each row's results are saved as soon as they are done (`evaluations/<scenario>/<row>.json`,
`<row>.mmlu.json`, with the settings they were made with) and reused by a later call with the
same settings.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from jaxcult.data.offensive import Task, read_culture_tasks
from jaxcult.errors import UserError
from jaxcult.eval.offensive import PROMPT, predict, sample_examples, score_task
from jaxcult.eval.survey import cultural_distinctiveness
from jaxcult.own_files import read_json_object
from jaxcult.recipes.narratives.config import BASE
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)


def _tasks(run) -> dict[str, dict[str, Task]]:
    settings = run.config.evaluate
    if run.config.tasks is None:
        raise UserError("narratives evaluate: set `tasks` (folder of <culture>/<task>.jsonl)")
    root = run.path(run.config.tasks)
    tasks = {c.name: read_culture_tasks(root / c.name) for c in run.config.cultures}
    for culture_tasks in tasks.values():
        for task in culture_tasks.values():
            task.examples = sample_examples(task.examples, settings.max_examples, settings.seed)
    return tasks


def _rows(run) -> dict[str, Path | None]:
    """Row name -> PEFT adapter folder (None: the base model)."""
    rows: dict[str, Path | None] = {BASE: None} if run.config.evaluate.base else {}
    for culture in run.config.adapter_cultures:
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
        for name, task in culture_tasks.items():
            started = time.perf_counter()
            predicted = predict(model, tokenizer, task.examples, mode=settings["mode"],
                                prompt=task.prompt or settings["prompt"], config=config,
                                official_quirks=settings["official_quirks"],
                                choices=task.choices)
            result = score_task(name, task.examples, predicted, task.labels)
            scores.setdefault(culture, []).append(vars(result))
            log.info(f"narratives evaluate: {label} on {culture}/{name}: macro-F1 "
                     f"{result.macro_f1:.3f} ({len(task.examples)} examples, "
                     f"{time.perf_counter() - started:.1f} s)")
    return scores


def evaluate_matrix(run) -> dict:
    from flax import nnx

    from jaxcult.hub.peft_format import import_peft
    from jaxcult.run.generate import load_generation_model

    tasks, rows = _tasks(run), _rows(run)
    model_name = _base_model(run)
    settings = {**_settings(run, model_name), "label_sets": {
        f"{culture}/{name}": task.declared for culture, culture_tasks in tasks.items()
        for name, task in culture_tasks.items() if task.declared}}
    mmlu = _mmlu_questions(run)
    mmlu_settings = {"model": model_name, **run.config.mmlu.model_dump(mode="json"),
                     "generation": settings["generation"]} if mmlu else None
    folder = run.out / "evaluations" / run.scenario
    folder.mkdir(parents=True, exist_ok=True)
    loaded: tuple | None = None
    models: dict[str, tuple] = {}

    def model_of(row: str) -> tuple:
        """The row's model (base + its adapter) and tokenizer, loaded once."""
        nonlocal loaded
        if row not in models:
            if loaded is None:
                loaded = load_generation_model(model_name, None, merge=False)
            model, tokenizer = loaded
            if rows[row] is not None:
                model = nnx.clone(model)
                import_peft(model, rows[row])
            models.clear()   # one adapted copy at a time
            models[row] = (model, tokenizer)
        return models[row]

    results, capability = {}, {}
    for row, adapter in rows.items():
        results[row] = _cached(folder / f"{row}.json", settings, adapter, "tasks", lambda: (
            _evaluate_row(*model_of(row), tasks, settings, row)))
        if mmlu:
            capability[row] = _cached(folder / f"{row}.mmlu.json", mmlu_settings, adapter, "mmlu",
                                      lambda: _mmlu_row(*model_of(row), mmlu, mmlu_settings, row))
    summary = write_matrix(run, results)
    if mmlu:
        summary["mmlu"] = write_mmlu(run, capability)
    return summary


def _cached(path: Path, settings: dict, adapter: Path | None, key: str, compute) -> dict:
    """`compute()`'s result, saved at `path` with the settings it was made with, or the saved
    one when those settings (and the adapter) are unchanged."""
    saved = read_json_object(path) if path.is_file() else {}
    if saved.get("settings") == settings and saved.get("adapter") == str(adapter or ""):
        return saved[key]
    result = compute()
    write_text_atomic(path, json.dumps({"settings": settings, "adapter": str(adapter or ""),
                                        key: result}, indent=1, ensure_ascii=False))
    return result


def _mmlu_questions(run) -> list:
    from jaxcult.data.mmlu import read_mmlu

    settings = run.config.mmlu
    if settings is None:
        return []
    return read_mmlu(run.path(settings.path), settings.subjects, settings.max_examples,
                     settings.seed)


def _mmlu_row(model, tokenizer, questions: list, settings: dict, label: str) -> dict:
    from jaxcult.config import GenerationConfig
    from jaxcult.eval.mmlu import predict, score

    started = time.perf_counter()
    config = GenerationConfig.model_validate(settings["generation"])
    result = score(questions, predict(model, tokenizer, questions, mode=settings["mode"],
                                      config=config))
    log.info(f"narratives evaluate: {label} on MMLU: accuracy {result.accuracy:.3f} "
             f"({result.questions} questions, {result.invalid} invalid, "
             f"{time.perf_counter() - started:.1f} s)")
    return vars(result)


def write_mmlu(run, results: dict[str, dict]) -> dict:
    """`mmlu-<scenario>.{json,tsv}`: accuracy, macro-F1 and invalid answers per row."""
    summary = {row: {k: r[k] for k in ("accuracy", "macro_f1", "invalid", "questions")}
               for row, r in results.items()}
    stem = run.out / f"mmlu-{run.scenario}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(results, indent=1, ensure_ascii=False))
    lines = ["model\taccuracy\tmacro_f1\tinvalid\tquestions"]
    lines += [f"{row}\t{r['accuracy']:.4f}\t{r['macro_f1']:.4f}\t{r['invalid']}\t{r['questions']}"
              for row, r in summary.items()]
    write_text_atomic(stem.with_suffix(".tsv"), "\n".join(lines) + "\n")
    return summary


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
