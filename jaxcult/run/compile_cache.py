"""XLA's persistent compilation cache for jaxcult commands.

Compiling a train step of a 30-layer model takes ~25 s on 2 CPU cores; a run repeated with the
same shapes (a second seed, a resumed run, one adapter per culture) compiles the same programs
again. JAX can keep compiled programs on disk, keyed by the program, the compile options and the
backend, so an identical program is loaded instead of compiled. Programs that compile in under
a second are not stored. `JAXCULT_COMPILATION_CACHE` sets the folder (`off` disables); JAX's own
`JAX_COMPILATION_CACHE_DIR`, when set, wins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from jaxcult.errors import UserError

log = logging.getLogger(__name__)

ENV = "JAXCULT_COMPILATION_CACHE"
MAX_BYTES = 4 << 30  # least recently used programs are deleted beyond this size
OFF = ("off", "0", "false", "no", "")


def cache_folder(env: Mapping[str, str]) -> Path | None:
    """Where compiled programs go: `JAXCULT_COMPILATION_CACHE`, else the user cache folder
    (`$XDG_CACHE_HOME/jaxcult/xla`, default `~/.cache/jaxcult/xla`); None when disabled."""
    if ENV in env:
        return None if env[ENV].strip().lower() in OFF else Path(env[ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxcult" / "xla"


def enable_compilation_cache(env: Mapping[str, str] = os.environ) -> Path | None:
    """Point JAX's persistent cache at `cache_folder(env)` (before anything is compiled).
    A folder named in the environment that cannot be created is an error; the default one
    only costs the cache (one line on stderr)."""
    import jax

    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(env["JAX_COMPILATION_CACHE_DIR"])
    folder = cache_folder(env)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if ENV in env:
            raise UserError(f"{ENV}={env[ENV]}: cannot create the compilation cache folder "
                            f"({err.strerror or err}); name a writable folder or set it to "
                            f"`off`") from None
        log.warning(f"note: compiled programs are not cached ({folder}: {err.strerror or err}); set "
              f"{ENV} to a writable folder")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return folder
