"""Metric sinks (JSONL always, TensorBoard, optional W&B) and console progress.

Only process 0 writes; other processes get a logger whose methods do nothing, so the
training loop never branches on the process index itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from jaxcult.config import LoggingConfig
from jaxcult.rundir import RunDir, append_whole, open_for_append

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class JsonlWriter:
    """Append-only JSON lines, each written whole and at once so a killed run keeps what it
    logged; a write that fails (disk full) is undone, so the file never ends in a torn line,
    and the error names the file. The file is created by its first record (a run without
    probes has no probes.jsonl)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            self._fd = open_for_append(self._path)
        line = json.dumps(_jsonable(record), ensure_ascii=False) + "\n"
        append_whole(self._fd, line.encode("utf-8"), self._path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MetricLogger:
    """Writes metrics.jsonl / events.jsonl / fisher.jsonl / probes.jsonl; mirrors scalars to TB, W&B."""

    def __init__(self, run: RunDir, config: LoggingConfig, *, run_config: dict | None = None,
                 is_main_process: bool = True) -> None:
        self.enabled = is_main_process
        if not self.enabled:
            return
        self._metrics = JsonlWriter(run.metrics)
        self._events = JsonlWriter(run.events)
        self._fisher = JsonlWriter(run.fisher)
        self._probes = JsonlWriter(run.probes)
        self._tb = None
        self._wandb = None
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run.tensorboard))
        if config.wandb:
            import wandb  # optional dependency: imported only when asked for

            self._wandb = wandb.init(project=config.wandb_project, dir=str(run.root),
                                     config=run_config or {}, name=run.root.name)

    def _scalars(self, prefix: str, step: int, values: dict[str, Any]) -> None:
        flat = {f"{prefix}/{k}": float(v) for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in flat.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None and flat:
            self._wandb.log(flat, step=step)

    def log_metrics(self, step: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        self._metrics.write({"step": step, "split": prefix, **metrics})
        self._scalars(prefix, step, metrics)

    def log_event(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self._events.write(record)

    def log_fisher(self, step: int, estimator: str, trace: dict[str, float],
                   seconds: float | None = None, normalised: dict[str, float] | None = None) -> None:
        if not self.enabled:
            return
        record = {"step": step, "estimator": estimator, "trace": trace}
        if seconds is not None:
            record["seconds"] = round(seconds, 4)
        if normalised is not None:
            record["normalised"] = normalised
        self._fisher.write(record)
        self._scalars("fisher", step, trace)

    def log_probe(self, step: int, probe: str, values: dict[str, dict[str, float]],
                  seconds: float) -> None:
        """One measurement of a probe: `values` maps a series (e.g. "value") to per-group numbers."""
        if not self.enabled:
            return
        self._probes.write({"step": step, "probe": probe, "seconds": round(seconds, 4), **values})
        for series, per_group in values.items():
            self._scalars(f"probe/{probe}/{series}", step, per_group)

    def close(self) -> None:
        if not self.enabled:
            return
        for writer in (self._metrics, self._events, self._fisher, self._probes):
            writer.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class Progress:
    """A tqdm bar on a terminal, plain periodic lines otherwise (CI logs stay readable): the
    lines go through the `jaxcult` logger, or to `stream` when one is given. A line's rate and
    ETA are over its last `window` lines (about a minute), so a machine that slows down shows."""

    def __init__(self, total: int, mode: str = "auto", *, initial: int = 0,
                 stream: IO[str] | None = None, every_seconds: float = 10.0,
                 window: int = 6) -> None:
        self.total, self.mode, self.stream = total, mode, stream
        if mode == "auto":
            self.mode = "bar" if (stream or sys.stderr).isatty() else "lines"
        self._bar = None
        self._start, self._last_line = time.monotonic(), 0.0
        self._start_step, self._step = initial, initial
        self._timing = False  # the rate is measured from the end of the first (compiling) step
        self._every = every_seconds
        self._marks: deque[tuple[float, int]] = deque(maxlen=window)  # (time, step) of recent lines
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=stream or sys.stderr, unit="step",
                             dynamic_ncols=True)

    @property
    def timing(self) -> bool:
        return self._timing

    def first_step_done(self, step: int) -> None:
        """Start the clock for rates and ETAs here, so compilation does not distort them."""
        if not self._timing:
            self._timing = True
            self._start, self._start_step = time.monotonic(), step
            self._marks.append((self._start, step))

    def update(self, step: int, loss: float | None = None) -> None:
        delta, self._step = step - self._step, step
        if self._bar is not None:
            self._bar.update(delta)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}")
            return
        now = time.monotonic()
        if self.mode == "lines" and (now - self._last_line >= self._every or step >= self.total):
            self._last_line = now
            done = step - self._start_step
            loss_text = f" loss {loss:.4f}" if loss is not None else ""
            if done > 0:
                then, before = self._marks[0] if self._marks else (self._start, self._start_step)
                rate = (step - before) / max(now - then, 1e-9)
                timing = f" {rate:.2f} step/s eta {(self.total - step) / max(rate, 1e-9):.0f}s"
                self._marks.append((now, step))
            else:
                timing = " (compiling)"
            line = f"step {step}/{self.total}{loss_text}{timing}"
            if self.stream is None:
                log.info(line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
