"""Reopen a finished (or checkpointed) run: its model with the best parameters, for export and
for re-scoring (`jaxcult eval`), without touching the run's own outputs."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

from flax import nnx

from jaxcult.checkpoint import Checkpointer, structure
from jaxcult.config import RunConfig
from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.hub.madx import language_states
from jaxcult.locks import held_by
from jaxcult.models.layer_stack import unstack_model
from jaxcult.run.build import ModelParts, build_run
from jaxcult.run.summary import make_summary
from jaxcult.rundir import RunDir, write_text_atomic
from jaxcult.trainers.evaluation import evaluate_languages
from jaxcult.trainers.program import ModelProgram

# what `jaxcult eval` may change: where and how to score, never the model
EVAL_OVERRIDES = ("data.", "task.evaluators.", "task.doc_stride", "task.n_best",
                  "task.max_answer_length", "task.scoring",
                  "trainer.eval_batch_size")
log = logging.getLogger(__name__)


def check_settled(run: RunDir, latest: bool) -> None:
    """A run still training (its folder, or a multi-seed or sweep parent, locked) has no final
    checkpoint: refused, or with `latest` (`--latest-checkpoint`) used as saved so far."""
    folders = [run.root, *([run.root.parent] if run.root.name.startswith("seed-") else [])]
    for folder in folders:
        holder = held_by(folder)
        if holder is None:
            continue
        if not latest:
            raise UserError(f"{run.root}: still being trained ({holder}); its checkpoints are "
                            f"not final: wait for it to finish, or pass --latest-checkpoint to "
                            f"use the newest one saved so far")
        log.warning(f"{run.root}: still being trained ({holder}); using the newest checkpoint "
                    f"saved so far")
        return


def run_config(run: RunDir, overrides: list[str] | None = None) -> RunConfig:
    if not run.config.exists():
        raise UserError(f"{run.root}: not a jaxcult run directory (no config.yaml)")
    return load_config(run.config, overrides or [])


def restore_best(run: RunDir, config: RunConfig, parts: ModelParts) -> tuple[dict, dict]:
    """(best-validation parameters, host state) from the run's newest checkpoint."""
    checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
    try:
        _, device, host = checkpointer.restore_latest({"best": parts.params})
    finally:
        checkpointer.close()
    return device["best"], host


def params_from_run(run_dir: Path, config: RunConfig, parts: ModelParts) -> dict:
    """The best checkpointed parameters of another run, shaped as this run's `parts.params`
    (`model.init_from`); a run of another model or PEFT structure is an error naming both."""
    run = RunDir(Path(run_dir).expanduser())
    if not run.checkpoints.is_dir():
        raise UserError(f"model.init_from: {run.root} has no checkpoints/ (not a finished run)")
    expected = structure(parts.params)

    def fits(host: dict) -> None:
        saved = {key[len(".params"):]: shape for key, shape in
                 (host.get("run") or {}).get("structure", {}).items() if key.startswith(".params")}
        differ = sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
        if differ:
            raise UserError(f"model.init_from: {run.root} was trained with another model, PEFT or "
                            f"head structure (e.g. {differ[0]}: {saved.get(differ[0])} there, "
                            f"{expected.get(differ[0])} here; {len(differ)} arrays differ)")

    checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
    try:
        _, device, _ = checkpointer.restore_latest({"best": parts.params}, fits)
    finally:
        checkpointer.close()
    return device["best"]


def load_run_model(run_dir: Path) -> tuple[RunConfig, nnx.Module]:
    """(config, model with the best checkpointed parameters) of a run directory."""
    run = RunDir(run_dir)
    config = run_config(run)
    parts = build_run(config).parts
    best, _ = restore_best(run, config, parts)
    model = nnx.merge(parts.graphdef, *[best[g] for g in parts.groups], parts.frozen)
    return config, unstack_model(model)  # exports and generation read per-layer modules


def rescore_run(run_dir: Path, overrides: list[str] | None = None,
                languages: list[str] | None = None, latest: bool = False) -> tuple[dict, Path]:
    """Score the run's best parameters on its test languages (or `languages`), optionally with
    other data/decoding settings; writes `evaluations/<time>.json` and returns (that summary,
    its path). See `check_settled` for `latest`."""
    run = RunDir(run_dir)
    check_settled(run, latest)
    bad = [o for o in overrides or [] if not o.startswith(EVAL_OVERRIDES)]
    if bad:
        raise UserError(f"eval: {bad[0]!r} cannot change at evaluation (allowed: "
                        f"{', '.join(p.rstrip('.') for p in EVAL_OVERRIDES)})")
    config = run_config(run, overrides)
    if languages:
        data = config.data.model_copy(update={"target_languages": list(languages)})
        config = config.model_copy(update={"data": data})
    if config.trainer.seeds:
        raise UserError(f"{run_dir}: a multi-seed run; evaluate one seed's directory "
                        f"({run_dir}/seed-<n>)")
    built = build_run(config)
    built.score_splits_with_model(config.trainer.eval_batch_size)
    parts, plugins = built.parts, built.plugins
    best, host = restore_best(run, config, parts)
    program = ModelProgram(plugins.task, plugins.evaluator, parts.graphdef, parts.groups)
    frozen = {lang: parts.frozen for lang in built.data.tests}
    if parts.language_hubs:
        frozen = language_states(parts.frozen, parts.language_hubs, list(built.data.tests))
    splits = {lang: split for lang, split in built.data.tests.items()
              if not languages or lang in languages}
    scores = evaluate_languages(program, best, frozen, splits, config.trainer.eval_batch_size)
    summary = make_summary(config, plugins, scores, host.get("trainable", []),
                           best_step=host["best"]["step"], best_validation=host["best"]["metrics"])
    summary["overrides"] = list(overrides or [])
    out = run.root / "evaluations" / f"{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    write_text_atomic(out, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary, out
