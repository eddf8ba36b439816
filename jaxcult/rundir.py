"""Run directories: where a run writes everything, and the rule that nothing is overwritten.

Layout (documented in docs/run-directory.md): config.yaml, metrics.jsonl, events.jsonl,
fisher.jsonl, probes.jsonl, summary.json, report.md, predictions/, checkpoints/, plots/, tb/.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcult.errors import UserError

OUTPUT_NAMES = (
    "config.yaml", "metrics.jsonl", "events.jsonl", "fisher.jsonl", "probes.jsonl", "summary.json",
    "report.md", "predictions",
    "checkpoints", "plots", "tb",
)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run's outputs."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def fisher(self) -> Path:
        return self.root / "fisher.jsonl"

    @property
    def probes(self) -> Path:
        return self.root / "probes.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    def existing_outputs(self) -> list[str]:
        """Output files and folders present, including the `seed-<n>/` runs of a multi-seed run."""
        seeds = sorted(p.name for p in self.root.glob("seed-*") if p.is_dir())
        return [name for name in OUTPUT_NAMES if (self.root / name).exists()] + seeds

    def seed_run(self, seed: int) -> RunDir:
        return RunDir(self.root / f"seed-{seed}")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Atomic write, so a crash never leaves half a summary that looks finished."""
        write_text_atomic(self.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)`, then the temporary renamed to `path`: a reader never sees half a
    file, and a failed write (disk full) leaves the old `path` as it was and no temporary; the
    error names `path`."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise


def append_whole(fd: int, data: bytes, path: Path) -> None:
    """Append `data` to the file open as `fd` (named `path`) in one write, or not at all: a
    write the disk cannot take whole (full, over a size limit) is cut back off, so the file
    never ends in a torn record, and the error names `path`."""
    end = os.fstat(fd).st_size
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as err:
        os.ftruncate(fd, end)
        raise OSError(err.errno, err.strerror, str(path)) from None


def open_for_append(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def default_run_root(name: str, base: Path = Path("runs")) -> Path:
    """`runs/<name>-<timestamp>`, made unique if two runs start in the same second."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = base / f"{safe}-{stamp}"
    suffix = 1
    while root.exists():
        suffix += 1
        root = base / f"{safe}-{stamp}-{suffix}"
    return root


def ensure_writable_dir(path: Path, what: str) -> None:
    """Fail before anything loads if `path` cannot be (created and) written as a directory."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{path}: cannot create the {what}: {existing} is a file, not a folder")
    probe = existing / f".jaxcult-write-test-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise UserError(f"{path}: cannot write the {what} in {existing} "
                        f"({err.strerror or type(err).__name__})") from None


def check_writable(root: Path, *, overwrite: bool, resume: bool) -> RunDir:
    """Refuse to touch a directory holding outputs unless told to resume or overwrite.

    Nothing is deleted here: call `prepare` once everything else has been validated.
    """
    run = RunDir(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: run directory path exists and is not a directory")
    ensure_writable_dir(root, "run directory")
    outputs = run.existing_outputs() if root.exists() else []
    if resume:
        if not run.config.exists():
            raise UserError(f"{root}: cannot resume: no config.yaml (is this a jaxcult run directory?)")
    elif outputs and not overwrite:
        raise UserError(
            f"{root}: run directory already holds outputs ({', '.join(outputs)}); "
            f"pass --resume {root} to continue it or --overwrite to replace it"
        )
    return run


def has_checkpoint(run: RunDir) -> bool:
    return run.checkpoints.is_dir() and any(p.name.isdigit() for p in run.checkpoints.iterdir())


def check_resumable(run: RunDir) -> None:
    """A run resumes from a saved step: none saved fails here, before any model loads."""
    if not has_checkpoint(run):
        state = "empty" if run.checkpoints.is_dir() else "missing"
        raise UserError(f"{run.checkpoints}: cannot resume: no checkpoint was saved (the folder is "
                        f"{state}); start the run again with --overwrite")


def prepare(run: RunDir, *, overwrite: bool, resume: bool) -> RunDir:
    """Create the layout; with `overwrite`, remove previous outputs first."""
    if overwrite and not resume:
        for name in run.existing_outputs():
            path = run.root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in (run.root, run.checkpoints, run.plots):
        sub.mkdir(parents=True, exist_ok=True)
    return run
