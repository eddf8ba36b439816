"""The host loop: one jitted step per batch, with hooks before and after each step.

Before-step hooks may replace the train state (a schedule opening groups changes its mask);
after-step hooks run every N steps and at the end (logging, evaluation, checkpoints, Fisher
tracking). SIGTERM/SIGINT finish the current step and end the loop; the caller then writes a
final checkpoint, so `--resume` continues bit-identically.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jaxcult.trainers.program import TrainProgram, TrainState

log = logging.getLogger(__name__)

BeforeStep = Callable[["TrainLoop", int], None]   # (loop, index of the step about to run)


@dataclass
class Hook:
    """`fn(loop, steps_done)` every `every` steps (0: never periodically) and at the end."""

    fn: Callable[[TrainLoop, int], None]
    every: int
    at_end: bool = True

    def due(self, done: int, total: int) -> bool:
        return bool(self.every and done % self.every == 0) or (self.at_end and done == total)


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step; the first signal is
    acknowledged at once, a second one interrupts immediately (no checkpoint)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.step = 0  # the step a signal now stops after (the one under way), for the message
        self._previous: dict = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        log.warning(f"{signal.Signals(signum).name}: stopping after step {self.step}; writing a "
              f"checkpoint (signal again to stop at once, without one)")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainLoop:
    """Steps `program` over `batches` from `state`; `metrics` holds the last step's (on device)."""

    def __init__(self, program: TrainProgram, state: TrainState, frozen: Any,
                 batches: Iterator[dict], place: Callable[[dict], dict], steps: int) -> None:
        self.program, self.state, self.frozen = program, state, frozen
        self.batches, self.place, self.steps = batches, place, steps
        self.metrics: dict[str, Any] = {}
        self.before: list[BeforeStep] = []
        self.after: list[Hook] = []

    def add_before_step(self, fn: BeforeStep) -> None:
        self.before.append(fn)

    def add_hook(self, fn: Callable[[TrainLoop, int], None], every: int, *, at_end: bool = True
                 ) -> None:
        self.after.append(Hook(fn, every, at_end))

    def before_step(self, step: int) -> None:
        for fn in self.before:
            fn(self, step)

    def after_step(self, done: int) -> None:
        for hook in self.after:
            if hook.due(done, self.steps):
                hook.fn(self, done)

    def run(self, first: int, stop: StopSignal) -> int | None:
        """Steps `first`..`steps - 1`; returns the steps done when a signal stopped it, else None."""
        for step in range(first, self.steps):
            done = stop.step = step + 1  # a signal from here on stops once this step is saved
            self.before_step(step)
            self.state, self.metrics = self.program.train_step(
                self.state, self.frozen, self.place(next(self.batches)))
            self.after_step(done)
            if stop.received is not None:
                return done
        return None
