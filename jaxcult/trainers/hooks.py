"""The hooks of a training run: schedule decisions, Fisher tracking, logging, evaluation,
checkpoints and the non-finite policy. Each is a small function registered on a `TrainLoop`.

Hooks read the device only when they act (a schedule check, a log step), so the host keeps
dispatching steps ahead of the device in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxcult.checkpoint import Checkpointer
from jaxcult.data.batching import Split
from jaxcult.errors import UserError
from jaxcult.eval import Metrics
from jaxcult.schedules import Schedule
from jaxcult.tracking import MetricLogger, Progress
from jaxcult.trainers.evaluation import BestKeeper, evaluate
from jaxcult.trainers.fisher_tracker import FisherTracker, InStepEstimate
from jaxcult.trainers.loop import TrainLoop
from jaxcult.trainers.program import ModelProgram

log = logging.getLogger(__name__)

Traces = Callable[[Any, int], dict[str, float]]   # (params, step) -> tr(F) per group


class FisherCache:
    """tr(F) of the parameters before step `s`, computed at most once per step (by `compute`,
    default the tracker itself; vectorised seeds compute every seed's at once)."""

    def __init__(self, tracker: FisherTracker, compute: Traces | None = None) -> None:
        self.tracker, self.compute = tracker, compute or tracker
        self._step: int | None = None
        self._value: dict[str, float] = {}
        self.seconds = 0.0  # wall time of the last computation (logged: what a check costs)

    def at(self, loop: TrainLoop, step: int) -> dict[str, float]:
        if self._step != step:
            start = time.perf_counter()
            self._step, self._value = step, self.compute(loop.state.params, step)
            self.seconds = time.perf_counter() - start
        return self._value

    def computed_at(self, step: int) -> dict[str, float] | None:
        return self._value if self._step == step else None


def schedule_decisions(schedule: Schedule, fishers: FisherCache, logger: MetricLogger):
    """Before each check step: let the schedule open groups (a new mask in the train state)."""
    def before(loop: TrainLoop, step: int) -> None:
        if not schedule.is_check(step):
            return
        decision = schedule.decide(step, np.asarray(loop.state.mask),
                                   lambda: fishers.at(loop, step))
        if decision is None:
            return
        loop.state = loop.state.replace(mask=jax.device_put(decision.mask, loop.state.mask.sharding))
        for event in decision.events:
            logger.log_event(event)
            log.info(f"step {event['step']}: {event['event']} {', '.join(event['groups'])} "
                     f"({event['reason']})")
    return before


def fisher_logging(fishers: FisherCache, logger: MetricLogger, every: int):
    """Log tr(F) every `every` steps (with the normalised moving average) and whenever a
    schedule computed it anyway."""
    tracker = fishers.tracker

    def before(loop: TrainLoop, step: int) -> None:
        if every and step % every == 0:
            traces = fishers.at(loop, step)
            logger.log_fisher(step, tracker.estimator, traces, fishers.seconds,
                              tracker.normalised(traces, np.asarray(loop.state.mask)))
        elif (traces := fishers.computed_at(step)) is not None:
            logger.log_fisher(step, tracker.estimator, traces, fishers.seconds)
    return before


class InStepWindow:
    """`fisher.estimator: in_step_ema`: the `window` steps before each check run the full
    backward (the state's `track` flag, set only when it changes) and hand their per-group
    traces, still on the device, to the estimator."""

    def __init__(self, tracker: InStepEstimate, loop: TrainLoop) -> None:
        self.tracker, self.on = tracker, bool(loop.state.track)

    def before(self, loop: TrainLoop, step: int) -> None:
        wanted = self.tracker.tracks(step)
        if wanted != self.on:
            loop.state = loop.state.replace(
                track=jax.device_put(np.asarray(wanted), loop.state.track.sharding))
            self.on = wanted

    def after(self, loop: TrainLoop, done: int) -> None:
        if self.on:
            self.tracker.observe(done - 1, loop.metrics["batch_trace"])


def in_step_traces(groups: list[str], logger: MetricLogger):
    """Log the step's own per-group squared batch gradient / B (`fisher.in_step`)."""
    def after(loop: TrainLoop, done: int) -> None:
        traces = np.asarray(loop.metrics["batch_trace"])
        logger.log_fisher(done - 1, "empirical_batch_in_step", dict(zip(groups, map(float, traces))))
    return after


class NonfiniteWatch:
    """Stops the run with a clear error at the first non-finite loss or gradient (checkpoints
    are kept), without reading the device every step: each step's `finite` flag stays on the
    device until the run needs a verdict anyway (every `cadence` steps, e.g. the log, eval and
    checkpoint intervals, before any checkpoint, and at the end); the error then names the first
    bad step exactly."""

    def __init__(self, checkpointer: Checkpointer, cadences: list[int]) -> None:
        self.checkpointer, self.cadences = checkpointer, [c for c in cadences if c]
        self.pending: list[tuple[int, Any]] = []

    def __call__(self, loop: TrainLoop, done: int) -> None:
        self.pending.append((done, loop.metrics["finite"], loop.metrics["loss"]))
        if done == loop.steps or any(done % c == 0 for c in self.cadences):
            self.verify()

    def verify(self) -> None:
        if not self.pending:
            return
        flags = np.asarray(jax.device_get([finite for _, finite, _ in self.pending]))
        pending, self.pending = self.pending, []
        if flags.all():
            return
        done, _, loss = pending[int(np.argmin(flags))]
        self.checkpointer.wait()
        kept = self.checkpointer.steps()
        where = (f"the last checkpoint (step {kept[-1]}) in {self.checkpointer.directory} is kept"
                 if kept else "no checkpoint had been written yet")
        raise UserError(f"non-finite loss or gradient at step {done} (loss {float(loss)}); "
                        f"{where}; set trainer.on_nonfinite=skip to skip such steps")


def metric_logging(groups: list[str], logger: MetricLogger, progress: Progress, first: int):
    """Log the last step's metrics, the step rate and the trainable groups; update progress."""
    last = {"time": time.perf_counter(), "step": first}

    def after(loop: TrainLoop, done: int) -> None:
        now = time.perf_counter()
        record = {k: float(v) for k, v in loop.metrics.items() if k != "batch_trace"}
        record["steps_per_second"] = (done - last["step"]) / max(now - last["time"], 1e-9)
        record["trainable_groups"] = [g for g, m in zip(groups, np.asarray(loop.state.mask)) if m]
        logger.log_metrics(done, record)
        last.update(time=now, step=done)
        progress.update(done, record["loss"])
    return after


def first_step_clock(progress: Progress):
    """After the first step (which compiles) finishes, start the progress clock."""
    def after(loop: TrainLoop, done: int) -> None:
        if not progress.timing:
            jax.block_until_ready(loop.metrics["loss"])
            progress.first_step_done(done)
    return after


Scorer = Callable[[TrainLoop, int], Metrics]   # (loop, steps done) -> validation metrics


def validation_scorer(program: ModelProgram, split: Split, batch_size: int) -> Scorer:
    """The loop's current parameters scored on the validation split."""
    return lambda loop, done: evaluate(program, loop.state.params, loop.frozen, split, batch_size)


def validation(score: Scorer, best: BestKeeper, logger: MetricLogger):
    """Score the validation split; keep the parameters of the best result."""
    def after(loop: TrainLoop, done: int) -> None:
        metrics = score(loop, done)
        logger.log_metrics(done, metrics, prefix="validation")
        best.offer(done, metrics, loop.state.params)
    return after


class CheckpointWriter:
    """Saves the train state, the best parameters and every stateful component's host state."""

    def __init__(self, checkpointer: Checkpointer, best: BestKeeper,
                 components: dict[str, Callable[[], Any]],
                 watch: NonfiniteWatch | None = None) -> None:
        self.checkpointer, self.best, self.components = checkpointer, best, components
        self.watch = watch  # never save a state that went non-finite
        self.last: int | None = None

    def __call__(self, loop: TrainLoop, done: int) -> None:
        if self.last == done:
            return
        if self.watch is not None:
            self.watch.verify()
        host = {name: state() for name, state in self.components.items()}
        host["best"] = self.best.state_dict()
        self.checkpointer.save(done, {"state": loop.state, "best": self.best.params}, host)
        self.last = done
