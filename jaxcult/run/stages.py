"""What the staged pipelines (`jaxcult clca`, `jaxcult narratives`) share: loading the config
for a stage, the output folder, and running one stage or all of them in order, timed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from jaxcult.config_loading import load_section
from jaxcult.errors import UserError


def open_pipeline(command: str, schema: type, config_path: Path, overrides: list[str], stage: str,
                  stages: Sequence[str], out: Path | None) -> tuple[Any, Path]:
    """(validated config, output folder) of a stage call; `run` stands for every stage."""
    if stage not in (*stages, "run"):
        raise UserError(f"{command}: unknown stage {stage!r} (stages: {', '.join(stages)}, run)")
    config = load_section(schema, config_path, overrides)
    out = out or Path("runs") / f"{command}-{config.name}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    return config, out


def write_settings(config, path: Path) -> None:
    """The resolved pipeline config beside its outputs (what a later stage call ran with)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False,
                                   allow_unicode=True), encoding="utf-8")


def run_in_order(command: str, stage: str, stages: Sequence[str],
                 call: Callable[[str], dict]) -> dict:
    """`call(name)` for `stage`, or for every stage in order for `run`; each one timed."""
    done = {}
    for name in (stages if stage == "run" else (stage,)):
        started = time.perf_counter()
        done[name] = call(name)
        print(f"{command}: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr,
              flush=True)
    return done
