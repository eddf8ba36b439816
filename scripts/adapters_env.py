"""The PyTorch reference environment with AdapterHub's `adapters` (it pins transformers 4.57,
so it cannot share jaxcult's environment). Created on first use; prints its python.

    python scripts/adapters_env.py

Used by `benchmarks/train_step.py` and the slow AdapterHub interop test. Set
JAXCULT_ADAPTERS_PYTHON to reuse an existing interpreter that has `adapters` installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / "benchmarks" / ".venv-adapters"
PACKAGES = ("torch==2.13.0", "adapters==1.3.0")


def adapters_python() -> Path:
    """Path of a python that imports `adapters`, creating benchmarks/.venv-adapters if needed."""
    override = os.environ.get("JAXCULT_ADAPTERS_PYTHON")
    if override:
        return Path(override)
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


if __name__ == "__main__":
    print(adapters_python())
