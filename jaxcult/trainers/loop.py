"""The host loop: schedule decisions, Fisher tracking, logging, evaluation and the summary."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult import schedules
from jaxcult.config import RunConfig
from jaxcult.data.batching import BatchIterator, Split, eval_batches
from jaxcult.errors import UserError
from jaxcult.logging import MetricLogger, Progress
from jaxcult.peft.groups import format_group_table
from jaxcult.rundir import RunDir
from jaxcult.trainers.optim import MaskedGroupOptimizer, lr_schedule
from jaxcult.trainers.setup import ModelParts, build_model, load_data
from jaxcult.trainers.steps import ClassificationProgram, TrainState


def total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    if config.trainer.steps is not None:
        return config.trainer.steps
    epochs = config.trainer.epochs if config.trainer.epochs is not None else 1.0
    return max(1, math.ceil(epochs * batches_per_epoch))


def accuracy(program: ClassificationProgram, state: TrainState, frozen, split: Split,
             batch_size: int) -> float:
    correct, count = 0, 0
    for batch, valid in eval_batches(split, batch_size):
        logits = program.eval_logits(state.params, frozen, {k: jnp.asarray(v) for k, v in batch.items()})
        hits = np.asarray(logits).argmax(-1) == batch["labels"]
        correct += int(hits[valid].sum())
        count += int(valid.sum())
    return correct / count


class FisherTracker:
    """tr(F) per group on fresh training batches (their own iterator: training data order is untouched)."""

    def __init__(self, config: RunConfig, program: ClassificationProgram, parts: ModelParts,
                 train: Split) -> None:
        size = config.fisher.batch_size or config.trainer.batch_size
        self.batches = BatchIterator(train, size, seed=config.trainer.seed + 7919)
        self.estimator, self.n = config.fisher.estimator, config.fisher.num_batches
        self.fn = program.make_fisher(self.estimator)
        self.groups, self.frozen = parts.groups, parts.frozen
        self.key = jax.random.key(config.trainer.seed + 1)
        self.ema: np.ndarray | None = None
        self.decay = config.fisher.ema

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        from jaxcult.fisher import combine

        values = []
        for i in range(self.n):
            batch = {k: jnp.asarray(v) for k, v in next(self.batches).items()}
            values.append(self.fn(state.params, self.frozen, batch,
                                  jax.random.fold_in(jax.random.fold_in(self.key, step), i)))
        traces = np.asarray(combine(self.estimator, values))
        return dict(zip(self.groups, map(float, traces)))

    def normalised(self, traces: dict[str, float], mask: np.ndarray) -> dict[str, float]:
        """tr(F) divided by the number of trainable groups, smoothed by a moving average."""
        raw = np.array([traces[g] for g in self.groups]) / max(int(mask.sum()), 1)
        self.ema = raw if self.ema is None else self.decay * self.ema + (1 - self.decay) * raw
        return dict(zip(self.groups, map(float, self.ema)))


def _build(config: RunConfig):
    data_tokenizer = None
    parts, data_tokenizer = build_model(config, num_labels=_num_labels(config))
    data = load_data(config, data_tokenizer)
    return parts, data


def _num_labels(config: RunConfig) -> int:
    from jaxcult.data import multilingual

    return config.task.num_labels or len(multilingual.LABELS)


def dry_run(config: RunConfig) -> None:
    """Print the mesh, the parameter groups and the run length without training."""
    from jaxcult.sharding import make_mesh

    mesh = make_mesh(config.mesh)
    parts, data = _build(config)
    print(f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {jax.default_backend()} device(s)")
    print(format_group_table(parts.counts, parts.total_params))
    steps = total_steps(config, len(data.train) // config.trainer.batch_size)
    print(f"train examples: {len(data.train)}, steps: {steps}, languages: {', '.join(data.tests)}")


def train(config: RunConfig, run: RunDir, *, resume: bool = False) -> dict:
    if resume:
        raise UserError(f"{run.root}: --resume needs checkpoints, which this version does not "
                        f"write yet; nothing was changed")
    if config.trainer.seeds:
        raise UserError("trainer.seeds: multi-seed runs are not available yet; use trainer.seed")
    parts, data = _build(config)
    print(format_group_table(parts.counts, parts.total_params), file=sys.stderr)
    iterator = BatchIterator(data.train, config.trainer.batch_size, config.trainer.seed)
    steps = total_steps(config, iterator.batches_per_epoch)
    optimizer = MaskedGroupOptimizer(config.optimizer, parts.groups)
    program = ClassificationProgram(parts.graphdef, parts.groups, optimizer,
                                    lr_schedule(config.optimizer, steps),
                                    config.optimizer.max_grad_norm, config.trainer.grad_accum,
                                    config.trainer.on_nonfinite == "skip",
                                    config.trainer.inject_nonfinite_at)
    schedule = schedules.resolve(config.schedule.name)(parts.groups, parts.layer_groups,
                                                        config.schedule, seed=config.trainer.seed)
    start = schedule.start()
    state = TrainState(step=jnp.zeros((), jnp.int32), params=parts.params,
                       opt_state=optimizer.init(parts.params), mask=jnp.asarray(start.mask),
                       rng=jax.random.key(config.trainer.seed))
    mask = start.mask
    tracker = FisherTracker(config, program, parts, data.train)
    logger = MetricLogger(run, config.logging, run_config=config.to_dict())
    for event in start.events:
        logger.log_event(event)
    progress = Progress(steps, config.logging.progress)
    best = {"accuracy": -1.0, "step": 0, "params": None}
    last_time, last_step = time.perf_counter(), 0
    eval_every = config.trainer.eval_every or steps
    try:
        for step in range(steps):
            cache: dict[str, dict[str, float]] = {}

            def fisher_now() -> dict[str, float]:
                if "value" not in cache:
                    cache["value"] = tracker(state, step)
                return cache["value"]

            decision = schedule.decide(step, mask, fisher_now)
            if decision is not None:
                mask = decision.mask
                state = state.replace(mask=jnp.asarray(mask))
                for event in decision.events:
                    logger.log_event(event)
            if config.fisher.track_every and step % config.fisher.track_every == 0:
                traces = fisher_now()
                logger.log_fisher(step, tracker.estimator, traces, tracker.normalised(traces, mask))
            elif "value" in cache:
                logger.log_fisher(step, tracker.estimator, cache["value"])
            batch = {k: jnp.asarray(v) for k, v in next(iterator).items()}
            state, metrics = program.train_step(state, parts.frozen, batch)
            done = step + 1
            if not bool(metrics["finite"]) and config.trainer.on_nonfinite == "stop":
                raise UserError(f"non-finite loss or gradient at step {done} (loss "
                                f"{float(metrics['loss'])}); set trainer.on_nonfinite=skip to "
                                f"skip such steps")
            if done % config.trainer.log_every == 0 or done == steps:
                now = time.perf_counter()
                record = {k: float(v) for k, v in metrics.items()}
                record["steps_per_second"] = (done - last_step) / max(now - last_time, 1e-9)
                record["trainable_groups"] = [g for g, m in zip(parts.groups, mask) if m]
                logger.log_metrics(done, record)
                last_time, last_step = now, done
                progress.update(done, record["loss"])
            if done % eval_every == 0 or done == steps:
                dev = accuracy(program, state, parts.frozen, data.validation,
                               config.trainer.eval_batch_size)
                logger.log_metrics(done, {"accuracy": dev}, prefix="validation")
                if dev > best["accuracy"]:
                    best = {"accuracy": dev, "step": done,
                            "params": jax.tree.map(np.asarray, state.params)}
    finally:
        progress.close()
    final = state.replace(params=jax.tree.map(jnp.asarray, best["params"]))
    scores = {lang: {"accuracy": accuracy(program, final, parts.frozen, split,
                                          config.trainer.eval_batch_size)}
              for lang, split in data.tests.items()}
    logger.close()
    summary = make_summary(config, scores, [g for g, m in zip(parts.groups, mask) if m],
                           best_step=best["step"], best_dev=best["accuracy"])
    run.write_summary(summary)
    from jaxcult.report import write_report

    write_report(run.root)
    print(format_scores(summary))
    return summary


def make_summary(config: RunConfig, scores: dict[str, dict[str, float]], trainable: list[str], *,
                 best_step: int, best_dev: float) -> dict:
    source = config.data.source_language
    targets = [lang for lang in scores if lang != source]
    metrics = sorted({m for s in scores.values() for m in s})
    average = {m: float(np.mean([scores[lang][m] for lang in targets])) for m in metrics} if targets else {}
    return {"task": config.task.name, "dataset": config.data.name, "source_language": source,
            "metrics": scores, "average_excluding_source": average,
            "trainable_groups_final": trainable, "best_step": best_step,
            "best_validation": {"accuracy": best_dev}, "seed": config.trainer.seed}


def format_scores(summary: dict) -> str:
    lines = [f"{'language':<10} {'accuracy':>9}"]
    for lang, values in summary["metrics"].items():
        marker = " (source)" if lang == summary["source_language"] else ""
        lines.append(f"{lang:<10} {100 * values['accuracy']:>8.2f}%{marker}")
    avg = summary["average_excluding_source"].get("accuracy")
    if avg is not None:
        lines.append(f"{'avg (excl. source)':<10} {100 * avg:>6.2f}%")
    return "\n".join(lines)


def evaluate_run(run_dir: Path, languages: list[str] | None = None) -> None:
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(f"{run_dir}: no summary.json; evaluating from checkpoints needs the "
                        f"checkpointing that this version does not write yet")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if languages:
        unknown = [lang for lang in languages if lang not in summary["metrics"]]
        if unknown:
            raise UserError(f"{run_dir}: no scores for language(s) {', '.join(unknown)}")
        summary["metrics"] = {k: v for k, v in summary["metrics"].items() if k in languages}
    print(format_scores(summary))
