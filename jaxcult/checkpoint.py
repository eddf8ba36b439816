"""Checkpoints with Orbax: named device trees (train state, best parameters) plus host state
as JSON, each its own item so that a reader restores only what it needs (evaluation: `best`).

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-write leaves no half checkpoint behind. A checkpoint that is complete on disk but
unreadable (for example a truncated file) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcult.config import CheckpointConfig
from jaxcult.errors import UserError

log = logging.getLogger(__name__)


def _to_savable(tree: Any) -> Any:
    """Typed PRNG keys -> raw key data (Orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x)
                        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def _from_savable(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x)
                        if jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key) else x, tree, like)


class Checkpointer:
    """Save and restore `({name: device_tree}, host_dict)` pairs keyed by step."""

    def __init__(self, directory: Path, config: CheckpointConfig) -> None:
        self.directory = directory.resolve()
        self.options = ocp.CheckpointManagerOptions(max_to_keep=config.keep,
                                                    enable_async_checkpointing=config.async_save,
                                                    create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self.options)
        self._failed: UserError | None = None

    def save(self, step: int, device: dict[str, Any], host: dict[str, Any]) -> None:
        """Start writing `step` (finished in the background with `checkpoint.async_save`); a
        write that fails, now or in the background, is a `UserError` here or from `wait`."""
        items = {name: ocp.args.StandardSave(_to_savable(tree)) for name, tree in device.items()}
        with self._failures():
            self._check_space(device)
            self.manager.save(step, args=ocp.args.Composite(**items, host=ocp.args.JsonSave(host)),
                              force=True)

    def wait(self) -> None:
        with self._failures():
            self.manager.wait_until_finished()

    def _check_space(self, device: dict[str, Any]) -> None:
        """A disk without room for the arrays fails before Orbax starts (its threads report a
        write failing midway at length)."""
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(device))
        free = shutil.disk_usage(self.directory).free
        if needed > free:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {needed / 2**20:,.1f} MiB "
                                        f"needed, {free / 2**20:,.1f} MiB free")

    @contextmanager
    def _failures(self):
        """A failed write (disk full, file size limit, permissions) becomes one line naming the
        folder and the OS's reason; the temporary folders of unfinished steps are removed, so
        the complete checkpoints before it are what a resume finds."""
        if self._failed is not None:
            raise self._failed
        try:
            yield
        except Exception as err:  # Orbax and tensorstore wrap OS errors in many types
            self._remove_partial()
            self._failed = UserError(f"{self.directory}: a checkpoint could not be written "
                                     f"({_os_reason(err)}); the checkpoints before it are "
                                     f"intact, and --resume continues from the newest of them")
            raise self._failed from err  # the cause: shown with --debug

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, like: dict[str, Any],
                       check: Callable[[dict[str, Any]], None] | None = None
                       ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """The newest readable checkpoint's items named in `like` (which gives their structure,
        dtypes and shardings) and its host state. `check(host)` runs on the host state before
        any array is read; a `UserError` from it (the checkpoint does not fit this run) stops
        the restore instead of falling back to an older checkpoint."""
        items = {name: ocp.args.StandardRestore(
            jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_savable(tree)))
            for name, tree in like.items()}
        failures = []
        for step in reversed(self.steps()):
            try:
                if check is not None:
                    check(dict(self.manager.restore(step, args=ocp.args.Composite(
                        host=ocp.args.JsonRestore()))["host"]))
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    **items, host=ocp.args.JsonRestore()))
            except UserError:
                raise
            except Exception as err:  # Orbax/tensorstore raise many types for broken files
                failures.append(step)
                log.warning(f"warning: checkpoint {self.directory / str(step)} is unreadable "
                      f"({type(err).__name__}); trying the previous one")
                continue
            device = {name: _from_savable(restored[name], tree) for name, tree in like.items()}
            if failures:
                self._set_aside(failures)
            return step, device, dict(restored["host"])
        detail = f" (unreadable: steps {failures})" if failures else ""
        raise UserError(f"{self.directory}: no usable checkpoint to resume from{detail}")

    def _set_aside(self, steps: list[int]) -> None:
        """Rename unreadable checkpoints to `corrupt-<step>` (kept for inspection, never reused)."""
        self.manager.close()
        for step in steps:
            target = self.directory / f"corrupt-{step}"
            suffix = 1
            while target.exists():
                suffix += 1
                target = self.directory / f"corrupt-{step}-{suffix}"
            (self.directory / str(step)).rename(target)
        self.manager = ocp.CheckpointManager(self.directory, options=self.options)

    def _remove_partial(self) -> bool:
        partial = list(self.directory.glob("*.orbax-checkpoint-tmp*"))
        for folder in partial:
            shutil.rmtree(folder, ignore_errors=True)
        return bool(partial)

    def _remove_partial_until_quiet(self, quiet: float = 0.5, at_most: float = 10.0) -> None:
        """After a failure Orbax's writer threads may still create an item folder: remove
        temporaries until none has appeared for `quiet` seconds, and once more at exit."""
        atexit.register(self._remove_partial)
        start = last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() - start < at_most:
            if self._remove_partial():
                last = time.monotonic()
            time.sleep(0.05)

    def close(self) -> None:
        """Finish pending writes (a failure is raised once), then release Orbax's threads; after
        a failure, what its threads wrote since is removed too."""
        try:
            if self._failed is None:
                self.wait()
        finally:
            self.manager.close()
            if self._failed is not None:
                self._remove_partial_until_quiet()


def _os_reason(err: BaseException) -> str:
    """The operating system's words for a failed write, wherever Orbax put them."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        return f"{os.strerror(int(code.group(1)))}, errno {code.group(1)}"
    return text.splitlines()[0][:200] if text else type(err).__name__


def structure(tree: Any) -> dict[str, list[int]]:
    """Path -> shape of every array in a tree: what a checkpoint records to recognise the
    model and optimizer it was written for."""
    return {jax.tree_util.keystr(path): list(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def host_arrays(tree: Any) -> Any:
    """Copy a device tree to host numpy arrays (for keeping the best parameters)."""
    return jax.tree.map(np.asarray, tree)
