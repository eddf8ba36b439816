"""jaxcult commands keep compiled programs in XLA's persistent cache (`JAXCULT_COMPILATION_CACHE`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcult.errors import UserError
from jaxcult.run.compile_cache import cache_folder, enable_compilation_cache


def test_the_cache_folder_follows_the_environment(tmp_path):
    assert cache_folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "jaxcult" / "xla"
    assert cache_folder({}) == Path.home() / ".cache" / "jaxcult" / "xla"
    assert cache_folder({"JAXCULT_COMPILATION_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("off", "0", ""):
        assert cache_folder({"JAXCULT_COMPILATION_CACHE": off}) is None


def test_a_named_folder_that_cannot_be_created_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="JAXCULT_COMPILATION_CACHE=.*cannot create"):
        enable_compilation_cache({"JAXCULT_COMPILATION_CACHE": str(blocker / "xla")})


def test_a_compiled_program_is_stored_and_loaded_again(tmp_path):
    """Two processes compile the same program: the first stores it, the second loads it."""
    script = ("from jaxcult.run.compile_cache import enable_compilation_cache\n"
              "enable_compilation_cache()\n"
              "import jax, jax.numpy as jnp\n"
              "from jax._src import monitoring\n"
              "hits = []\n"
              "monitoring.register_event_listener("
              "lambda name, **kw: hits.append(name) if 'cache_hits' in name else None)\n"
              "print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(4)).sum()), len(hits))\n")
    env = {**os.environ, "JAXCULT_COMPILATION_CACHE": str(tmp_path / "xla"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    assert int(runs[0][1]) == 0 and int(runs[1][1]) > 0   # compiled, then loaded
    assert any((tmp_path / "xla").iterdir())
