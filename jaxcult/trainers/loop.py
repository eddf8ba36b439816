"""The host loop: schedule decisions, Fisher tracking, logging, checkpoints, evaluation, summary.

Everything that decides the future of a run (train state, best parameters, data iterator
positions, Fisher moving average, mask) is checkpointed, so `--resume` continues bit-identically
on CPU. SIGTERM/SIGINT finish the current step, write a checkpoint and exit cleanly.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxcult import schedules
from jaxcult.checkpoint import Checkpointer, host_arrays
from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config
from jaxcult.data.batching import BatchIterator
from jaxcult.data.pipeline import GrainBatches
from jaxcult.errors import UserError
from jaxcult.logging import MetricLogger, Progress
from jaxcult.peft.groups import format_group_table
from jaxcult.peft.madx import language_states
from jaxcult.report import read_jsonl, write_report
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
from jaxcult.tasks import task_for
from jaxcult.trainers.evaluation import evaluate, format_scores, is_better, make_summary
from jaxcult.trainers.fisher_tracker import FisherTracker
from jaxcult.trainers.optim import MaskedGroupOptimizer, lr_schedule
from jaxcult.trainers.setup import build_model
from jaxcult.trainers.steps import TrainProgram, TrainState
from jaxcult.trainers.task_data import load_data, num_labels


def total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    if config.trainer.steps is not None:
        return config.trainer.steps
    epochs = config.trainer.epochs if config.trainer.epochs is not None else 1.0
    return max(1, math.ceil(epochs * batches_per_epoch))


def build_run(config: RunConfig):
    parts, tokenizer = build_model(config, num_labels(config))
    return parts, load_data(config, tokenizer)


def dry_run(config: RunConfig) -> None:
    """Print the mesh, each group's sharding and a per-device memory estimate; train nothing."""
    mesh = make_mesh(config.mesh)
    parts, data = build_run(config)
    steps = total_steps(config, len(data.train) // config.trainer.batch_size)
    print(f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {jax.default_backend()} device(s)")
    print(format_group_table(parts.counts, parts.total_params))
    estimate = memory_estimate(config, parts, mesh)
    print("per-device memory estimate:")
    for name, value in estimate["per_device_bytes"].items():
        print(f"  {name:<22} {value / 2**20:10.1f} MiB")
    print("parameter shardings per group (logical axes -> mesh axes, tensor count):")
    for group, specs in estimate["specs"].items():
        print(f"  {group}:")
        for spec, count in specs.items():
            print(f"    {spec:<44} x{count}")
    print(f"train examples: {len(data.train)}, steps: {steps}, languages: {', '.join(data.tests)}")


def memory_estimate(config: RunConfig, parts, mesh) -> dict:
    """Bytes per device for frozen and trainable parameters, Adam state and activations.

    Parameter and optimizer bytes follow each tensor's sharding; activations are a rough
    upper estimate of what the backward pass keeps per layer (about 20 hidden-sized tensors and
    3 attention maps per example token), split over the batch axes.
    """
    from collections import Counter

    from jaxcult.models.layers import axes_of
    from jaxcult.sharding import logical_to_spec

    rules = config.mesh.rules
    specs: dict[str, Counter] = {}

    def shard_bytes(state, group: str) -> int:
        total = 0
        for _, variable in nnx.to_flat_state(state):
            spec = logical_to_spec(axes_of(variable), variable.shape, rules, mesh)
            specs.setdefault(group, Counter())[f"{axes_of(variable)} -> {tuple(spec)}"] += 1
            split = 1
            for axis in spec:
                for name in ([axis] if isinstance(axis, str) else list(axis or [])):
                    split *= mesh.shape[name]
            total += variable[...].nbytes // split
        return total

    frozen = shard_bytes(parts.frozen, "frozen backbone")
    trainable = sum(shard_bytes(parts.params[g], g) for g in parts.groups)
    batch_split = mesh.shape["data"] * mesh.shape["fsdp"]
    backbone = parts.frozen["encoder"] if "encoder" in parts.frozen else parts.frozen
    layers = len(backbone["layers"])
    hidden = max(v.shape[-1] for _, v in nnx.to_flat_state(backbone) if v.ndim == 1)
    tokens = config.trainer.batch_size // config.trainer.grad_accum * config.model.max_length
    heads = hidden // 64 or 1
    width = jnp.dtype(config.model.compute_dtype).itemsize
    activations = layers * tokens * (20 * hidden + 3 * heads * config.model.max_length) * width
    return {"per_device_bytes": {"frozen parameters": frozen, "trainable parameters": trainable,
                                 "optimizer state (Adam)": 2 * trainable,
                                 "activations (estimate)": activations // batch_split},
            "specs": {group: dict(counter) for group, counter in specs.items()}}


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _truncate_logs(run: RunDir, step: int) -> None:
    """On resume, drop records the interrupted process wrote after its last checkpoint."""
    for path, keep in ((run.metrics, lambda r: r["step"] <= step),
                       (run.events, lambda r: r["step"] < step),
                       (run.fisher, lambda r: r["step"] < step)):
        if path.exists():
            kept = [json.dumps(r, ensure_ascii=False) for r in read_jsonl(path) if keep(r)]
            write_text_atomic(path, "".join(line + "\n" for line in kept))


def start_distributed(mesh_config) -> None:
    """Join the multi-controller runtime; unset fields are detected from the cluster (TPU pods,
    SLURM, Open MPI, Kubernetes) by `jax.distributed.initialize`. The CPU backend gets gloo
    collectives (it has none by default), so multi-process runs work on CPU hosts too."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=mesh_config.coordinator_address,
                               num_processes=mesh_config.num_processes,
                               process_id=mesh_config.process_id)


def train(config: RunConfig, run: RunDir, *, resume: bool = False,
          overwrite: bool = False) -> dict | None:
    """Train one run; returns its summary (None when stopped by a signal).

    The run directory is created (or, with `overwrite`, cleared) only once the model and data
    have loaded, so a bad model path or dataset never touches existing outputs.
    """
    if config.trainer.seeds:
        from jaxcult.trainers.seeds import train_seeds

        return train_seeds(config, run, resume=resume, overwrite=overwrite)
    if config.mesh.distributed:
        start_distributed(config.mesh)
    mesh = make_mesh(config.mesh)
    with jax.set_mesh(mesh), activation_rules(config.mesh.rules):
        return _train_on_mesh(config, run, mesh, resume=resume, overwrite=overwrite)


def _train_on_mesh(config: RunConfig, run: RunDir, mesh, *, resume: bool,
                   overwrite: bool) -> dict | None:
    parts, data = build_run(config)
    schedule = schedules.resolve(config.schedule.name)(parts.groups, parts.layer_groups,
                                                        config.schedule, seed=config.trainer.seed)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if config.data.loader == "grain":
        iterator = GrainBatches(data.train, config.trainer.batch_size, config.trainer.seed,
                                worker_count=config.data.worker_count,
                                prefetch=config.data.prefetch, **shard)
    else:
        iterator = BatchIterator(data.train, config.trainer.batch_size, config.trainer.seed, **shard)
    steps = total_steps(config, iterator.batches_per_epoch)
    optimizer = MaskedGroupOptimizer(config.optimizer, parts.groups)
    task = task_for(config.task)
    program = TrainProgram(task, parts.graphdef, parts.groups, optimizer,
                           lr_schedule(config.optimizer, steps), config.optimizer.max_grad_norm,
                           config.trainer.grad_accum, config.trainer.on_nonfinite == "skip",
                           config.trainer.inject_nonfinite_at, config.fisher.in_step)
    rules = config.mesh.rules
    check_batch_divisible(config.trainer.batch_size, mesh, rules, "trainer.batch_size")
    replicated = NamedSharding(mesh, PartitionSpec())
    frozen = place_variables(parts.frozen, mesh, rules)
    params = place_variables(parts.params, mesh, rules)
    start = schedule.start()
    state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), replicated), params=params,
                       opt_state=on_mesh(jax.jit(optimizer.init)(params), mesh),
                       mask=jax.device_put(start.mask, replicated),
                       rng=jax.device_put(jax.random.key(config.trainer.seed), replicated))
    program.pin_shardings(state, frozen, batch_sharding(mesh, rules, 1))
    mask = start.mask
    tracker = FisherTracker(config, program, parts.groups, frozen, data.train)
    # MAD-X: each test language's adapter swapped in (or dropped); checked before training
    language_frozen = (language_states(frozen, parts.language_hubs, list(data.tests))
                       if parts.language_hubs else {})
    main_process = jax.process_index() == 0  # only process 0 writes files other than checkpoints
    if main_process:
        prepare(run, overwrite=overwrite, resume=resume)
        if not resume:
            write_text_atomic(run.config, dump_config(config))
    checkpointer = Checkpointer(run.checkpoints, config.checkpoint)
    best: dict = {"value": None, "step": 0}
    best_params = host_arrays(state.params)
    first = 0
    if resume:
        first, device, host = checkpointer.restore_latest({"state": state, "best": state.params})
        state, best_params = device["state"], host_arrays(device["best"])
        iterator.restore(host["iterator"])
        tracker.restore(host["tracker"])
        schedule.load_state_dict(host["schedule"])
        mask, best = np.asarray(host["mask"], dtype=bool), host["best"]
        if main_process:
            _truncate_logs(run, first)
        print(f"resuming {run.root} from step {first}", file=sys.stderr)
    print(format_group_table(parts.counts, parts.total_params), file=sys.stderr)
    logger = MetricLogger(run, config.logging, run_config=config.to_dict(),
                          is_main_process=jax.process_index() == 0)
    if not resume:
        for event in start.events:
            logger.log_event(event)

    def save(done: int) -> None:
        host = {"iterator": iterator.state(), "tracker": tracker.state(), "mask": mask.tolist(),
                "schedule": schedule.state_dict(), "best": best}
        checkpointer.save(done, {"state": state, "best": best_params}, host)

    progress = Progress(steps, config.logging.progress, initial=first)
    last_time, last_step = time.perf_counter(), first
    eval_every = config.trainer.eval_every or steps
    stopped = None
    with _StopSignal() as stop:
        try:
            for step in range(first, steps):
                cache: dict[str, dict[str, float]] = {}

                def fisher_now() -> dict[str, float]:
                    if "value" not in cache:
                        cache["value"] = tracker(state.params, step)
                    return cache["value"]

                decision = schedule.decide(step, mask, fisher_now)
                if decision is not None:
                    mask = decision.mask
                    state = state.replace(mask=jax.device_put(mask, replicated))
                    for event in decision.events:
                        logger.log_event(event)
                if config.fisher.track_every and step % config.fisher.track_every == 0:
                    traces = fisher_now()
                    logger.log_fisher(step, tracker.estimator, traces,
                                      tracker.normalised(traces, mask))
                elif "value" in cache:
                    logger.log_fisher(step, tracker.estimator, cache["value"])
                batch = global_batch(next(iterator), mesh, rules)
                state, metrics = program.train_step(state, frozen, batch)
                done = step + 1
                if config.fisher.in_step:
                    traces = np.asarray(metrics.pop("batch_trace"))
                    logger.log_fisher(step, "empirical_batch_in_step",
                                      dict(zip(parts.groups, map(float, traces))))
                if not bool(metrics["finite"]) and config.trainer.on_nonfinite == "stop":
                    checkpointer.wait()
                    kept = checkpointer.steps()
                    where = (f"the last checkpoint (step {kept[-1]}) in {run.checkpoints} is kept"
                             if kept else "no checkpoint had been written yet")
                    raise UserError(f"non-finite loss or gradient at step {done} (loss "
                                    f"{float(metrics['loss'])}); {where}; set "
                                    f"trainer.on_nonfinite=skip to skip such steps")
                if done % config.trainer.log_every == 0 or done == steps:
                    now = time.perf_counter()
                    record = {k: float(v) for k, v in metrics.items()}
                    record["steps_per_second"] = (done - last_step) / max(now - last_time, 1e-9)
                    record["trainable_groups"] = [g for g, m in zip(parts.groups, mask) if m]
                    logger.log_metrics(done, record)
                    last_time, last_step = now, done
                    progress.update(done, record["loss"])
                if done % eval_every == 0 or done == steps:
                    dev = evaluate(program, state.params, frozen, data.validation,
                                   config.trainer.eval_batch_size)
                    logger.log_metrics(done, dev, prefix="validation")
                    if is_better(dev[task.primary_metric], best["value"], task.maximize):
                        best = {"value": dev[task.primary_metric], "step": done, "metrics": dev}
                        best_params = host_arrays(state.params)
                if stop.received is not None:
                    stopped = done
                    save(done)
                    break
                if done == steps or (config.checkpoint.every and done % config.checkpoint.every == 0):
                    save(done)
        finally:
            iterator.close()
            progress.close()
            checkpointer.close()
            logger.close()
    if stopped is not None:
        print(f"stopped by signal after step {stopped}; checkpoint written. Continue with: "
              f"jaxcult train --resume {run.root}", file=sys.stderr)
        return None
    scores = {lang: evaluate(program, best_params, language_frozen.get(lang, frozen), split,
                             config.trainer.eval_batch_size)
              for lang, split in data.tests.items()}
    summary = make_summary(config, scores, [g for g, m in zip(parts.groups, mask) if m],
                           best_step=best["step"], best_validation=best.get("metrics", {}),
                           primary_metric=task.primary_metric)
    if main_process:
        run.write_summary(summary)
        write_report(run.root)
        print(format_scores(summary))
    return summary
