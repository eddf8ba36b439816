"""Reopen a finished (or checkpointed) run: its model with the best parameters, for export and
for re-scoring (`jaxcult eval`), without touching the run's own outputs."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.checkpoint import Checkpointer
from jaxcult.config import RunConfig
from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.rundir import RunDir, write_text_atomic
from jaxcult.tasks import task_for
from jaxcult.trainers.evaluation import evaluate, format_scores, make_summary
from jaxcult.trainers.loop import build_run
from jaxcult.trainers.optim import MaskedGroupOptimizer, lr_schedule
from jaxcult.trainers.steps import TrainProgram, TrainState

# what `jaxcult eval` may change: where and how to score, never the model
EVAL_OVERRIDES = ("data.", "task.n_best", "task.max_answer_length", "task.doc_stride",
                  "trainer.eval_batch_size")


def _run_config(run: RunDir, overrides: list[str] | None = None) -> RunConfig:
    if not run.config.exists():
        raise UserError(f"{run.root}: not a jaxcult run directory (no config.yaml)")
    return load_config(run.config, overrides or [])


def restore_best(run: RunDir, config: RunConfig, parts) -> dict:
    """The best-validation parameters (group -> state) from the run's newest checkpoint."""
    optimizer = MaskedGroupOptimizer(config.optimizer, parts.groups)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=parts.params,
                       opt_state=optimizer.init(parts.params),
                       mask=jnp.zeros(len(parts.groups), bool), rng=jax.random.key(0))
    checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
    try:
        _, device, _ = checkpointer.restore_latest({"state": state, "best": state.params})
    finally:
        checkpointer.close()
    return device["best"]


def load_run_model(run_dir: Path):
    """(config, model with the best checkpointed parameters) of a run directory."""
    run = RunDir(run_dir)
    config = _run_config(run)
    parts, _ = build_run(config)
    best = restore_best(run, config, parts)
    return config, nnx.merge(parts.graphdef, *[best[g] for g in parts.groups], parts.frozen)


def rescore_run(run_dir: Path, overrides: list[str] | None = None,
                languages: list[str] | None = None) -> dict:
    """Score the run's best parameters on its test languages (or `languages`), optionally with
    other data/decoding settings; writes `evaluations/<time>.json` and returns that summary."""
    from jaxcult.peft.madx import language_states

    run = RunDir(run_dir)
    bad = [o for o in overrides or [] if not o.startswith(EVAL_OVERRIDES)]
    if bad:
        raise UserError(f"eval: {bad[0]!r} cannot change at evaluation (allowed: "
                        f"{', '.join(p.rstrip('.') for p in EVAL_OVERRIDES)})")
    config = _run_config(run, overrides)
    if languages:
        data = config.data.model_copy(update={"target_languages": list(languages)})
        config = config.model_copy(update={"data": data})
    if config.trainer.seeds:
        raise UserError(f"{run_dir}: a multi-seed run; evaluate one seed's directory "
                        f"({run_dir}/seed-<n>)")
    parts, data = build_run(config)
    best = restore_best(run, config, parts)
    program = TrainProgram(task_for(config.task), parts.graphdef, parts.groups,
                           MaskedGroupOptimizer(config.optimizer, parts.groups),
                           lr_schedule(config.optimizer, 1), None, 1, False)
    frozen = {lang: parts.frozen for lang in data.tests}
    if parts.language_hubs:
        frozen = language_states(parts.frozen, parts.language_hubs, list(data.tests))
    scores = {lang: evaluate(program, best, frozen[lang], split, config.trainer.eval_batch_size)
              for lang, split in data.tests.items() if not languages or lang in languages}
    summary = make_summary(config, scores, [], best_step=-1, best_validation={},
                           primary_metric=program.task.primary_metric)
    summary["overrides"] = list(overrides or [])
    out = run.root / "evaluations" / f"{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    write_text_atomic(out, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(format_scores(summary))
    print(f"written: {out}")
    return summary
