"""The one stage runner every recipe goes through (`jaxcult <recipe> STAGE CONFIG`).

For a call it: validates the config (one-line errors naming file and key), takes the output
folder's lock for the whole call (a second writer is refused, naming the holder), refuses a
stage whose provenance differs from what made the folder's outputs (naming the keys), runs the
stage or every stage in order (`run`), timing each, and records the facts each returns in
`summary.json` and its provenance in `stages.json`. The resolved config is written beside the
outputs once a stage has finished with it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from jaxcult.config_loading import load_section
from jaxcult.errors import UserError
from jaxcult.locks import FolderLock
from jaxcult.own_files import read_json_object
from jaxcult.recipes.base import Recipe, Stage
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

ALL = "run"


def _read_json(path: Path) -> dict:
    return read_json_object(path) if path.exists() else {}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two provenance records."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted({*old, *new}, key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


class RecipeRun:
    """One call of a recipe on one output folder (the lock is held by the caller)."""

    def __init__(self, recipe: Recipe, config: Any, context: Any, out: Path) -> None:
        self.recipe, self.config, self.context, self.out = recipe, config, context, out
        self.scope = tuple(recipe.scope(config))

    def _stages_path(self) -> Path:
        return self.out / "stages.json"

    def check_provenance(self, stage: Stage) -> dict | None:
        """The stage's provenance, refused when the folder's outputs were made otherwise."""
        if stage.provenance is None:
            return None
        wanted = json.loads(json.dumps(stage.provenance(self.context), default=str))
        recorded = _read_json(self._stages_path())
        for key in (*self.scope, stage.name):
            recorded = recorded.get(key, {}) if isinstance(recorded, dict) else {}
        earlier = recorded.get("provenance") if isinstance(recorded, dict) else None
        if earlier is not None and earlier != wanted:
            changed = _differences(earlier, wanted)
            raise UserError(f"{self.out}: its {stage.name} outputs were made with other settings "
                            f"({', '.join(changed[:5])} differ; see {self._stages_path()}); use "
                            f"another output folder, or delete the stage's outputs to redo it")
        return wanted

    def _record(self, path: Path, stage: str, value: dict) -> None:
        found = _read_json(path)
        node = found
        for key in self.scope:
            node = node.setdefault(key, {})
        node[stage] = value
        write_text_atomic(path, json.dumps(found, indent=1, ensure_ascii=False) + "\n")

    def run_stage(self, stage: Stage) -> dict:
        provenance = self.check_provenance(stage)
        started = time.perf_counter()
        stages = self._stages_path()
        before = stages.read_text(encoding="utf-8") if stages.exists() else None
        if provenance is not None:  # recorded before it starts: an interrupted stage counts
            self._record(stages, stage.name, {"provenance": provenance, "finished": False})
        try:
            facts = stage.function()(self.context)
        except UserError:  # refused its input: it made nothing these settings must own
            if before is None:
                stages.unlink(missing_ok=True)
            else:
                write_text_atomic(stages, before)
            raise
        seconds = time.perf_counter() - started
        self._record(self.out / "summary.json", stage.name, facts)
        self._record(stages, stage.name, {"provenance": provenance, "finished": True,
                                          "seconds": round(seconds, 1)})
        write_text_atomic(self.out / self.recipe.resolved_name(self.config), yaml.safe_dump(
            self.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        log.info(yaml.safe_dump({stage.name: facts}, sort_keys=False, allow_unicode=True).rstrip())
        log.info(f"{self.recipe.name}: {stage.name} done in {seconds:.1f} s")
        return facts


def default_out(recipe: Recipe, config: Any) -> Path:
    return Path("runs") / f"{recipe.name}-{getattr(config, 'name', recipe.name)}"


def run_recipe(recipe: Recipe, stage: str, config_path: Path, overrides: list[str],
               out: Path | None = None, **extra: Any) -> dict:
    """Run `stage` of `recipe` (for `run`, every stage the config calls for, in order) on the
    config at `config_path` with dotted `overrides`; returns each stage's facts. `extra` goes
    to the recipe's context (e.g. models already loaded, in tests)."""
    if stage != ALL:
        recipe.stage(stage)    # an unknown stage is refused before the config is read
    config = load_section(recipe.settings, config_path, overrides)
    stages = recipe.stages_to_run(config) if stage == ALL else (recipe.stage(stage),)
    out = Path(out) if out is not None else default_out(recipe, config)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    with FolderLock(out, f"{recipe.name} output folder"):
        context = recipe.make_context(config, config_path.resolve().parent, out, **extra)
        run = RecipeRun(recipe, config, context, out)
        return {each.name: run.run_stage(each) for each in stages}
