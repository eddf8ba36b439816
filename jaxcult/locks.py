"""One writer per output folder: an advisory lock held for the life of the writing process.

`FolderLock(folder)` takes an exclusive `flock` on `<folder>/.jaxcult.lock` and writes the
holder (pid, host, start time) into it; a second writer fails at once with a `UserError` that
names the holder. The kernel releases the lock when its process dies, however it dies, so a
lock left by a killed run never blocks the next one: its stale holder line is replaced, with a
note. `held_by(folder)` tells a reader (export, eval) whether a writer is at work there.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from jaxcult.errors import UserError

LOCK_NAME = ".jaxcult.lock"
log = logging.getLogger(__name__)


class FolderLock:
    """Context manager: exclusive use of `folder` (created if missing) by this process."""

    def __init__(self, folder: Path, what: str = "output folder") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._handle = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise UserError(f"{self.path.parent}: this {self.what} is in use by another jaxcult "
                            f"process ({describe(holder)}); wait for it, or use another "
                            f"folder") from None
        handle.seek(0)
        stale = handle.read().strip()
        if stale:  # a holder that ended without releasing: killed, or its machine went down
            log.warning(f"{self.path.parent}: took over the lock left by a {self.what} writer "
                        f"that has ended ({describe(stale)})")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": _dt.datetime.now().isoformat(timespec="seconds")}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is None:
            return
        self._handle.truncate(0)
        folder = self.path.parent
        if self._created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            self.path.unlink()  # a writer that failed before writing leaves no folder behind
            folder.rmdir()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def held_by(folder: Path) -> str | None:
    """`pid N on HOST since TIME` of the process writing `folder` now, or None."""
    path = Path(folder) / LOCK_NAME
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return describe(handle.read().strip())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def describe(holder: str) -> str:
    """`pid N on HOST since TIME` from a lock file's holder line."""
    try:
        found = json.loads(holder)
        return f"pid {found['pid']} on {found['host']} since {found['started']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "holder unknown"
