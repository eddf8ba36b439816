"""`jaxcult sweep CONFIG --grid KEY=V1,V2 [--grid ...] --seeds N --out DIR` (or `jaxcult sweep
SWEEP_FILE`, whose `sweep:` section holds the same settings): every cell of a grid of config
overrides, each trained over the same seeds, then one report.

Each cell is a multi-seed run (`run.seeds`) in `<out>/cells/<cell>/` (seed-<n>/ inside). A
finished cell is read back, not retrained; an interrupted one resumes seed by seed from its
checkpoints; a cell whose saved config differs from the current one is an error (another
`--out`, or delete the cell). Every cell's config is validated before anything trains.
`sweep_report` writes `sweep.json`, `results.md` and the plots.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcult.config import RunConfig
from jaxcult.config_loading import load_config, load_section, read_yaml, same_config
from jaxcult.config_sweep import SweepConfig, SweepFile
from jaxcult.errors import UserError
from jaxcult.locks import FolderLock
from jaxcult.own_files import read_json_object
from jaxcult.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    overrides: tuple[str, ...]     # KEY=VALUE of this cell, in grid order

    @property
    def name(self) -> str:
        return " ".join(self.overrides)

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._=,-]+", "_", "__".join(self.overrides)).replace("=", "-")


def _split_values(text: str) -> list[str]:
    """Comma-separated values; commas inside [...] or {...} belong to a value (YAML lists)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    return [v.strip() for v in [*values, current]]


def parse_grid(items: list[str]) -> list[Cell]:
    """The cells of `KEY=V1,V2,...` axes (their product, the first axis slowest)."""
    axes = []
    for item in items:
        key, sep, text = item.partition("=")
        values = _split_values(text) if sep else []
        if not key.strip() or not values or not all(values):
            raise UserError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,... (e.g. "
                            f"schedule.name=standard,gu,fun)")
        axes.append((key, values))
    return grid_cells(axes, "--grid")


def grid_cells(axes: list[tuple[str, list[str]]], where: str) -> list[Cell]:
    """The cells of (KEY, [VALUE, ...]) axes, values as override text (their product, the
    first axis slowest); `where` names the axes' origin in errors."""
    keys: set[str] = set()
    for key, values in axes:
        if key in keys:
            raise UserError(f"{where}: {key} is given twice; put all its values in one axis")
        keys.add(key)
        if len(set(values)) != len(values):
            raise UserError(f"{where}: {key}: a value is listed twice")
    if not axes:
        raise UserError("sweep: give at least one --grid KEY=V1,V2,...")
    return [Cell(tuple(combo)) for combo in
            itertools.product(*[[f"{key}={v}" for v in values] for key, values in axes])]


def override_text(value: Any) -> str:
    """A YAML value of a sweep file's grid as command-line override text."""
    return value if isinstance(value, str) else json.dumps(value)


def read_sweep_file(path: Path) -> tuple[SweepConfig, Path] | None:
    """A sweep file's settings and the run config they name (relative to the file); None
    when `path` is a run config (no top-level `sweep:`)."""
    if "sweep" not in read_yaml(path):
        return None
    settings = load_section(SweepFile, path).sweep
    config = Path(settings.config)
    return settings, config if config.is_absolute() else path.parent / config


def cell_configs(config_path: Path, cells: list[Cell], seeds: list[int], overrides: list[str]
                 ) -> dict[Cell, RunConfig]:
    """Every cell's validated config, its plugins and schedule resolved (an invalid cell fails
    the sweep before any training)."""
    from jaxcult.run.build import resolve_plugins
    from jaxcult.schedules.base import resolve

    configs = {}
    for cell in cells:
        try:
            configs[cell] = load_config(config_path, [*overrides, *cell.overrides,
                                                      f"trainer.seeds={list(seeds)}"])
            resolve_plugins(configs[cell])
            resolve(configs[cell].schedule.name)
        except UserError as error:
            raise UserError(f"sweep cell {cell.name!r}: {error}") from None
    return configs


def baseline_cell(cells: list[Cell], baseline: str | None) -> Cell:
    """The cell holding every KEY=VALUE of `baseline` (space-separated); default the first."""
    if baseline is None:
        return cells[0]
    wanted = set(baseline.split())
    found = [c for c in cells if wanted <= set(c.overrides)]
    if len(found) != 1:
        raise UserError(f"--baseline {baseline!r}: matches {len(found)} cells (cells: "
                        f"{'; '.join(c.name for c in cells)}); name exactly one")
    return found[0]


def train_cell(config: RunConfig, run: RunDir, cell: Cell) -> dict:
    """A cell's aggregate summary: read back when finished, else trained or resumed."""
    from jaxcult.run.train import train

    if run.config.exists() and not same_config(run.config, config):
        raise UserError(f"{run.config}: cell {cell.name!r} was run with another config; delete "
                        f"{run.root} or sweep into another --out")
    if run.summary.exists():
        log.info(f"sweep: {cell.name}: finished, read back")
        return read_json_object(run.summary, ("metrics", "std", "per_seed"))
    log.info(f"sweep: {cell.name} -> {run.root}")
    return train(config, run, resume=run.config.exists())


def sweep_command(config_path: Path, cells: list[Cell], seeds: list[int], out: Path,
                  overrides: list[str], *, baseline: str | None = None, command: str = "") -> dict:
    """Train every cell over `seeds`; write the report; return sweep.json's content."""
    from jaxcult.run.sweep_report import write_report

    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: expected distinct seeds, found {seeds}")
    configs = cell_configs(config_path, cells, seeds, overrides)
    base = baseline_cell(cells, baseline)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    with FolderLock(out, "sweep folder"):
        summaries = {cell: train_cell(configs[cell], RunDir(out / "cells" / cell.folder), cell)
                     for cell in cells}
        return write_report(out, config_path, summaries, base, seeds, command)
