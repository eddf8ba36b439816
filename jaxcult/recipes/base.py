"""What a recipe is: a multi-stage research pipeline with its own config schema and command.

A recipe names its stages in order; each stage is a function of the recipe's context (the
validated config, the folder of the config file, the output folder) that writes its outputs
into the output folder and returns a few facts for `summary.json`. A stage resumes by itself
where its outputs allow it (CLCA's append-only JSONL, finished adapter runs); the runner
(`recipes.runner`) gives every stage the rest: the lock, provenance, progress and summary.

Registration makes `jaxcult <name> STAGE CONFIG` a command: built-ins register in
`jaxcult.recipes`; a recipe from outside the package is found through the `jaxcult.recipes`
entry-point group of an installed distribution, or named by import path in the environment
variable `JAXCULT_RECIPES` (`pkg.mod:RECIPE`, comma-separated).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from jaxcult.errors import UserError
from jaxcult.registry import Registry, import_path

log = logging.getLogger(__name__)

ENTRY_POINTS = "jaxcult.recipes"
ENVIRONMENT = "JAXCULT_RECIPES"


@dataclass(frozen=True)
class Stage:
    """One step of a recipe. `run` (a callable, or `pkg.mod:function` imported when the stage
    runs, so that `--help` stays light) takes the context and returns its facts. `provenance`
    gives what the stage's outputs depend on (JSON-compatible); a later call whose provenance
    differs is refused, naming the keys, instead of mixing two experiments in one folder."""

    name: str
    run: Callable[[Any], dict] | str
    help: str = ""
    provenance: Callable[[Any], dict] | None = None

    def function(self) -> Callable[[Any], dict]:
        return import_path(self.run, f"stage {self.name}") if isinstance(self.run, str) else self.run


@dataclass(frozen=True)
class Recipe:
    """A recipe's command: its name, help, config schema, stages and context factory."""

    name: str
    help: str
    description: str
    settings: type[BaseModel]                   # the config schema (YAML with `base:`)
    stages: tuple[Stage, ...]
    context: Callable[..., Any] | str           # (config, root, out, **extra) -> context
    example: str = ""                           # a config file to show in the help
    scope: Callable[[Any], tuple[str, ...]] = lambda config: ()  # summary.json key prefix
    settings_file: Callable[[Any], str] | None = None  # name of the resolved config beside
    #   the outputs (default `<name>.yaml`)
    run_stages: Callable[[Any], tuple[str, ...]] | None = None  # the stages `run` does for a
    #   config (default: all; a recipe leaves out stages whose sections are not configured)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UserError(f"{self.name}: unknown stage {name!r} (stages: "
                        f"{', '.join(s.name for s in self.stages)}, run)")

    def stages_to_run(self, config: Any) -> tuple[Stage, ...]:
        """The stages `run` does, in order."""
        if self.run_stages is None:
            return self.stages
        return tuple(self.stage(name) for name in self.run_stages(config))

    def make_context(self, config: Any, root: Path, out: Path, **extra: Any) -> Any:
        factory = (import_path(self.context, f"recipe {self.name}") if isinstance(self.context, str)
                   else self.context)
        return factory(config, root, out, **extra)

    def resolved_name(self, config: Any) -> str:
        return self.settings_file(config) if self.settings_file else f"{self.name}.yaml"


RECIPES: Registry[Recipe] = Registry("recipe", check=lambda entry: isinstance(entry, Recipe))


def register_recipe(recipe: Recipe) -> Recipe:
    """Make `recipe` a `jaxcult` command."""
    RECIPES.add(recipe.name, recipe)
    return recipe


def _user_recipes() -> list[tuple[str, Callable[[], object]]]:
    """(where it is named, loader) of each recipe from outside the package."""
    found = [(f"entry point {ep.name} = {ep.value}", ep.load)
             for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)]
    for path in filter(None, (p.strip() for p in os.environ.get(ENVIRONMENT, "").split(","))):
        found.append((f"{ENVIRONMENT} {path}", lambda path=path: import_path(path, ENVIRONMENT)))
    return found


def discover() -> list[str]:
    """Register every recipe named outside the package; returns a warning per one that could
    not be loaded (the other commands keep working)."""
    problems = []
    for where, load in _user_recipes():
        try:
            recipe = load()
            if not isinstance(recipe, Recipe):
                raise UserError(f"{recipe!r} is not a jaxcult.recipes.Recipe")
            if recipe.name not in RECIPES:
                register_recipe(recipe)
        except (UserError, ImportError, AttributeError, ValueError) as error:
            problems.append(f"warning: recipe plug-in ({where}) not loaded: {error}")
    return problems
