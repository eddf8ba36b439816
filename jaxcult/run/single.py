"""Train one run (one seed): build on the mesh, wire the loop's hooks, evaluate, summarise.

Everything that decides the future of a run (train state with its mask, best parameters, data
iterator positions, Fisher moving average, schedule state) is checkpointed, so `--resume`
continues bit-identically on CPU. The run directory is created (or, with `overwrite`, cleared)
only once the model and data have loaded, so bad input never touches existing outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxcult import schedules
from jaxcult.checkpoint import Checkpointer, structure
from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config
from jaxcult.data.batching import BatchIterator, same_examples
from jaxcult.data.pipeline import GrainBatches
from jaxcult.errors import Interrupted, UserError
from jaxcult.hub.madx import language_states
from jaxcult.own_files import read_jsonl
from jaxcult.peft.groups import format_group_table
from jaxcult.report import write_report
from jaxcult.run.build import Built, build_run
from jaxcult.run.restore import params_from_run
from jaxcult.run.summary import make_summary
from jaxcult.rundir import RunDir, prepare, write_text_atomic
from jaxcult.sharding import (
    activation_rules,
    batch_sharding,
    check_batch_divisible,
    global_batch,
    make_mesh,
    on_mesh,
    place_variables,
)
from jaxcult.tracking import MetricLogger, Progress
from jaxcult.trainers import hooks
from jaxcult.trainers.evaluation import BestKeeper, evaluate_languages
from jaxcult.trainers.fisher_tracker import FisherTracker, InStepEstimate
from jaxcult.trainers.loop import StopSignal, TrainLoop
from jaxcult.trainers.optim import group_lr_scales, lr_schedule, masked_optimizer
from jaxcult.trainers.probe_runner import ProbeRunner
from jaxcult.trainers.program import (
    ModelProgram,
    StepOptions,
    TrainProgram,
    init_state,
    step_shardings,
)

log = logging.getLogger(__name__)


def total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    if config.trainer.steps is not None:
        return config.trainer.steps
    epochs = config.trainer.epochs if config.trainer.epochs is not None else 1.0
    return max(1, math.ceil(epochs * batches_per_epoch))


def start_distributed(mesh_config) -> None:
    """Join the multi-controller runtime; unset fields are detected from the cluster (TPU pods,
    SLURM, Open MPI, Kubernetes) by `jax.distributed.initialize`. The CPU backend gets gloo
    collectives (it has none by default), so multi-process runs work on CPU hosts too. Joins
    once per process."""
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=mesh_config.coordinator_address,
                               num_processes=mesh_config.num_processes,
                               process_id=mesh_config.process_id)


def train_batches(config: RunConfig, built: Built):
    """The training iterator: grain (default) or the in-process one, this process's slices."""
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count(),
                 keep_remainder=not config.data.drop_remainder,
                 length_grouping=config.data.length_grouping)
    trainer = config.trainer
    if config.data.loader == "grain":
        return GrainBatches(built.data.train, trainer.batch_size, trainer.seed,
                            worker_count=config.data.worker_count, prefetch=config.data.prefetch,
                            **shard)
    return BatchIterator(built.data.train, trainer.batch_size, trainer.seed, **shard)


@dataclass
class Session:
    """The pieces of one training session, built on the mesh before the loop starts."""

    config: RunConfig
    built: Built
    program: TrainProgram
    loop: TrainLoop
    schedule: schedules.Schedule
    tracker: FisherTracker | InStepEstimate
    probes: ProbeRunner
    iterator: object
    best: BestKeeper
    start_events: list


def step_options(config: RunConfig, groups: list[str]) -> StepOptions:
    """How the config's train step treats batches and gradients; groups with learning-rate
    multiplier 0 are fixed (never differentiated)."""
    fixed = tuple(g for g, scale in zip(groups, group_lr_scales(config.optimizer.group_lr, groups))
                  if scale == 0)
    in_step = config.fisher.in_step or config.fisher.estimator == "in_step_ema"
    return StepOptions(config.trainer.grad_accum, config.trainer.on_nonfinite == "skip",
                       config.trainer.inject_nonfinite_at, in_step,
                       config.trainer.truncated_backward, fixed, config.model.remat)


def open_session(config: RunConfig, built: Built, mesh, model: ModelProgram | None = None) -> Session:
    """Everything a run trains with, placed on `mesh`; `model` shares another session's model
    program (vectorised seeds: their evaluation and Fisher programs compile once)."""
    parts, rules = built.parts, config.mesh.rules
    iterator = train_batches(config, built)
    steps = total_steps(config, iterator.batches_per_epoch)
    options = step_options(config, parts.groups)
    fixed = options.fixed_groups
    # groups with learning-rate multiplier 0 never train, so no schedule ever opens them
    schedule = schedules.resolve(config.schedule.name)(parts.groups,
                                                        [g for g in parts.layer_groups if g not in fixed],
                                                        config.schedule, seed=config.trainer.seed)
    check_batch_divisible(config.trainer.batch_size, mesh, rules, "trainer.batch_size")
    remainder = len(built.data.train) % config.trainer.batch_size
    if not config.data.drop_remainder and remainder:
        check_batch_divisible(remainder, mesh, rules, "data.drop_remainder=false: the partial batch")
    lr = lr_schedule(config.optimizer, steps)
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    replicated = NamedSharding(mesh, PartitionSpec())
    frozen = place_variables(parts.frozen, mesh, rules)
    initial = (params_from_run(Path(config.model.init_from), config, parts)
               if config.model.init_from else parts.params)
    params = place_variables(initial, mesh, rules)
    start = schedule.start()
    state = on_mesh(init_state(params, optimizer, jax.device_put(start.mask, replicated),
                               config.trainer.seed, track=config.fisher.in_step), mesh)
    model = model or ModelProgram(built.plugins.task, built.plugins.evaluator, parts.graphdef,
                                  parts.groups)
    in_step_ema = config.fisher.estimator == "in_step_ema"
    program = TrainProgram(model, optimizer, lr, options, step_shardings(
        state, frozen, batch_sharding(mesh, rules, 1), model.task.batch_keys))
    loop = TrainLoop(program, state, frozen, iterator,
                     lambda batch: global_batch(batch, mesh, rules), steps)
    tracker = (InStepEstimate(config, parts.groups, schedule.is_check) if in_step_ema
               else FisherTracker(config, model, parts.groups, frozen, built.data.train))
    evaluator = built.plugins.evaluator
    best = BestKeeper(evaluator.primary_metric, evaluator.maximize, state.params)
    probes = ProbeRunner(config, model, frozen, built.data.train, built.data.tests)
    return Session(config, built, program, loop, schedule, tracker, probes, iterator, best,
                   start.events)


def _truncate_logs(run: RunDir, step: int) -> None:
    """On resume, drop records the interrupted process wrote after its last checkpoint."""
    for path, keep in ((run.metrics, lambda r: r["step"] <= step),
                       (run.events, lambda r: r["step"] < step),
                       (run.fisher, lambda r: r["step"] < step),
                       (run.probes, lambda r: r["step"] <= step)):
        if path.exists():
            kept = [json.dumps(r, ensure_ascii=False) for r in read_jsonl(path, ("step",))
                    if keep(r)]
            write_text_atomic(path, "".join(line + "\n" for line in kept))


def run_record(session: Session) -> dict:
    """What a checkpoint must match to be resumed: the config (mesh aside) and the shapes of
    the train state."""
    config = session.config.to_dict()
    config.pop("mesh")
    return {"config": config, "structure": structure(session.loop.state)}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumable(expected: dict, run: RunDir):
    """A check of a checkpoint's host record against this run (see `run_record`)."""
    def check(host: dict) -> None:
        saved = host.get("run")
        if saved is None:
            raise UserError(f"{run.checkpoints}: the checkpoint records no config (written by an "
                            f"older jaxcult); start a new run")
        old, new = _flat(saved["config"]), _flat(expected["config"])
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise UserError(f"{run.config}: changed since the checkpoint was written ({diff}{more}); "
                            f"only mesh.* may change on resume: restore the file or start a new run")
        old, new = saved["structure"], expected["structure"]
        moved = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if moved:
            raise UserError(f"{run.checkpoints}: written for another model or optimizer structure "
                            f"(e.g. {moved[0]}: shape {old.get(moved[0])} in the checkpoint, "
                            f"{new.get(moved[0])} now; {len(moved)} arrays differ)")
    return check


def resume_session(session: Session, checkpointer: Checkpointer, run: RunDir) -> int:
    """Restore every stateful piece from the newest readable checkpoint; returns its step."""
    loop = session.loop
    first, device, host = checkpointer.restore_latest(
        {"state": loop.state, "best": loop.state.params},
        check=resumable(run_record(session), run))
    loop.state = device["state"]
    session.iterator.restore(host["iterator"])
    session.tracker.restore(host["tracker"])
    session.probes.restore(host.get("probes"))
    session.schedule.load_state_dict(host["schedule"])
    session.best.load_state_dict(host["best"], device["best"])
    if jax.process_index() == 0:
        _truncate_logs(run, first)
    log.info(f"resuming {run.root} from step {first}")
    return first


def install_hooks(session: Session, logger: MetricLogger, checkpointer: Checkpointer,
                  progress: Progress, first: int, score: hooks.Scorer | None = None,
                  traces: hooks.Traces | None = None) -> hooks.CheckpointWriter:
    """Register the run's hooks on its loop in their order; returns the checkpoint writer.
    `score` and `traces` replace the validation scoring and the tr(F) estimate (vectorised
    seeds compute every seed's at once)."""
    config, loop, groups = session.config, session.loop, session.built.parts.groups
    fishers = hooks.FisherCache(session.tracker, traces)
    loop.add_before_step(hooks.schedule_decisions(session.schedule, fishers, logger))
    loop.add_before_step(hooks.fisher_logging(fishers, logger, config.fisher.track_every))
    if isinstance(session.tracker, InStepEstimate):
        window = hooks.InStepWindow(session.tracker, loop)
        loop.add_before_step(window.before)
        loop.add_hook(window.after, every=1)
    if config.fisher.in_step:
        loop.add_hook(hooks.in_step_traces(groups, logger), every=1)
    watch = None
    if config.trainer.on_nonfinite == "stop":
        watch = hooks.NonfiniteWatch(checkpointer, [config.trainer.log_every,
                                                    config.trainer.eval_every])
        loop.add_hook(watch, every=1)
    loop.add_hook(hooks.first_step_clock(progress), every=1, at_end=False)
    loop.add_hook(hooks.metric_logging(groups, logger, progress, first), every=config.trainer.log_every)
    for index, probe_config in enumerate(config.probes):
        loop.add_hook(session.probes.hook(index, logger), every=probe_config.every)
    score = score or hooks.validation_scorer(session.program.model, session.built.data.validation,
                                             config.trainer.eval_batch_size)
    loop.add_hook(hooks.validation(score, session.best, logger), every=config.trainer.eval_every)
    record = run_record(session)

    def trainable() -> list[str]:  # a record for `jaxcult eval`; training reads the state's mask
        return [g for g, m in zip(groups, np.asarray(loop.state.mask)) if m]

    writer = hooks.CheckpointWriter(checkpointer, session.best, {
        "iterator": session.iterator.state, "tracker": session.tracker.state,
        "probes": session.probes.state,
        "schedule": session.schedule.state_dict, "run": lambda: record, "trainable": trainable},
        watch)
    loop.add_hook(writer, every=config.checkpoint.every)
    return writer


class SessionOutputs:
    """A session's checkpoints, logs and hooks around its loop (the loop itself is driven by
    `run_session`, or in lock-step with other seeds' by `run.vectorized`): resumes the session
    when asked, installs the hooks (`score`, `traces`: see `install_hooks`); `close` releases
    everything.
    `echo` false keeps its group table and progress off the terminal (vectorised seeds: the
    first seed shows them for all, which move in lock-step)."""

    def __init__(self, session: Session, run: RunDir, *, resume: bool,
                 score: hooks.Scorer | None = None, traces: hooks.Traces | None = None,
                 echo: bool = True) -> None:
        config = session.config
        self.session, self.run = session, run
        self.checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
        self.first = resume_session(session, self.checkpointer, run) if resume else 0
        if echo:
            log.info(format_group_table(session.built.parts.counts, session.built.parts.total_params))
        self.logger = MetricLogger(run, config.logging, run_config=config.to_dict(),
                                   is_main_process=jax.process_index() == 0)
        if not resume:
            for event in session.start_events:
                self.logger.log_event(event)
        self.progress = Progress(session.loop.steps, config.logging.progress if echo else "off",
                                 initial=self.first)
        self.writer = install_hooks(session, self.logger, self.checkpointer, self.progress,
                                    self.first, score, traces)

    def checkpoint_now(self, done: int) -> None:
        """The checkpoint a signal asks for before the process ends."""
        self.writer(self.session.loop, done)

    def close(self) -> None:
        self.session.iterator.close()
        self.progress.close()
        self.checkpointer.close()
        self.logger.close()


COMPILE_THREADS = 4  # at most this many train-step programs compile at once (host memory)


def precompile_steps(session: Session, first: int) -> None:
    """The train step compiled for every batch shape the data will bring (one per length
    bucket in use), several at a time, before the first step (see `TrainProgram.precompile`);
    iterators that cannot tell their shapes ahead leave compilation to the first batches."""
    samples = getattr(session.iterator, "shape_samples", None)
    if samples is None or first >= session.loop.steps:
        return
    loop = session.loop
    batches = [loop.place(batch) for batch in samples(first, loop.steps - first)]
    workers = min(len(batches), os.cpu_count() or 1, COMPILE_THREADS)
    start = time.perf_counter()
    session.program.precompile(loop.state, loop.frozen, batches, workers)
    log.info(f"compiled the train step for {len(batches)} batch shape"
             f"{'s' if len(batches) > 1 else ''} in {time.perf_counter() - start:.1f} s "
             f"({workers} at a time)")


def run_session(session: Session, run: RunDir, *, resume: bool) -> tuple[int, int] | None:
    """The training loop with its hooks; returns (step, signal) when a signal stopped it."""
    outputs = SessionOutputs(session, run, resume=resume)
    try:
        with StopSignal() as stop:
            precompile_steps(session, outputs.first)
            stopped = session.loop.run(outputs.first, stop)
            if stopped is not None:
                outputs.checkpoint_now(stopped)
                stopped = (stopped, stop.received)
    finally:
        outputs.close()
    return stopped


def interrupted(run: RunDir, step: int, signum: int) -> Interrupted:
    return Interrupted(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint "
                       f"written. Continue with: jaxcult train --resume {run.root}", signum)


def reused_validation(session: Session, per_language: dict) -> dict[str, dict]:
    """The languages whose split holds exactly the validation examples (a dataset without a
    separate test split): they take the best validation metrics, the same parameters on the
    same examples, instead of being scored again (see `say_reused`)."""
    tests, best, validation = session.built.data.tests, session.best, session.built.data.validation
    return {lang: best.metrics for lang, split in tests.items()
            if best.metrics and lang not in per_language and same_examples(split, validation)}


def say_reused(languages, scored_at: str) -> None:
    """On stderr, for each language `reused_validation` took: why it was not scored again."""
    for lang in languages:
        log.info(f"evaluated {lang}: its split is the validation split, scored at {scored_at}")


def final_scores(session: Session, per_language: dict,
                 predictions_dir: Path | None = None) -> dict[str, dict]:
    """The best-validation parameters scored on every evaluation language (MAD-X: each with
    its own language adapter swapped in, from `per_language`); the evaluator's per-example
    predictions, if it keeps any, go to `predictions_dir`. See `reused_validation`."""
    tests, frozen = session.built.data.tests, session.loop.frozen
    reused = reused_validation(session, per_language)
    say_reused(reused, f"step {session.best.step}")
    todo = {lang: split for lang, split in tests.items() if lang not in reused}
    scores = evaluate_languages(session.program.model, session.best.params,
                                {lang: per_language.get(lang, frozen) for lang in todo}, todo,
                                session.config.trainer.eval_batch_size, predictions_dir) if todo else {}
    return {lang: reused[lang] if lang in reused else scores[lang] for lang in tests}


def train_one(config: RunConfig, run: RunDir, *, resume: bool = False, overwrite: bool = False,
              before_writing: Callable[[], None] | None = None) -> dict:
    """Train one run; returns its summary (raises `Interrupted` when a signal stopped it).
    `before_writing` runs once data and model have loaded, before anything is written."""
    if config.mesh.distributed:
        start_distributed(config.mesh)
    mesh = make_mesh(config.mesh)
    with jax.set_mesh(mesh), activation_rules(config.mesh.rules):
        built = build_run(config, mesh)
        built.score_splits_with_model(config.trainer.eval_batch_size)
        session = open_session(config, built, mesh)
        hubs = built.parts.language_hubs  # MAD-X: every language's adapter checked before training
        per_language = (language_states(session.loop.frozen, hubs, list(built.data.tests))
                        if hubs else {})
        if before_writing is not None:
            before_writing()
        main_process = jax.process_index() == 0  # only process 0 writes files but checkpoints
        if main_process:
            prepare(run, overwrite=overwrite, resume=resume)
            if not resume:
                write_text_atomic(run.config, dump_config(config))
        stopped = run_session(session, run, resume=resume)
        if stopped is not None:
            raise interrupted(run, *stopped)
        summary = session_summary(session, per_language, run if main_process else None)
    return summary


def session_summary(session: Session, per_language: dict, run: RunDir | None,
                    scores: dict[str, dict] | None = None) -> dict:
    """A trained session's final scores (`final_scores` unless given) as its summary; with
    `run` (the main process), also written there with its report and printed."""
    built = session.built
    final_mask = np.asarray(session.loop.state.mask)
    if scores is None:
        scores = final_scores(session, per_language, run.predictions if run is not None else None)
    summary = make_summary(session.config, built.plugins, scores,
                           [g for g, m in zip(built.parts.groups, final_mask) if m],
                           best_step=session.best.step, best_validation=session.best.metrics)
    if run is not None:
        run.write_summary(summary)
        write_report(run.root)
    return summary
