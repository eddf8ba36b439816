"""The lower layers name no plug-in: a plug-in's behaviour belongs to the plug-in.

- The schema (`config.py` and the other modules of the lowest layer) holds no built-in plug-in
  name at all, defaults included: a family's default is the registry's (`default=True`).
- No module below the command line (use cases included) compares a plug-in family's choice
  with a built-in name of that family (`task.name == "extractive_qa"`, `model_type == "bert"`):
  what depends on the plug-in is asked of the plug-in (`Task.head_formats`,
  `Schedule.reads_fisher`, `Architecture.pooler_classifiers`, ...). Only the plug-in's own
  modules may name it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from test_layering import LAYERS, PACKAGE, layer, module_name

SCHEMA = set(LAYERS[-1])
# family -> words that mark an expression as that family's choice
MARKERS = {"task": ("task",), "dataset": ("data",), "schedule": ("schedule",),
           "evaluator": ("evaluator",), "probe": ("probe",),
           "architecture": ("model_type", "architecture"), "recipe": ("recipe",)}
# (module, name): why a schema module may hold this string (it means something else there)
SCHEMA_ALLOWED = {("jaxcult.config", "random"): "data.subsample: a subsampling mode"}


def builtin_names() -> dict[str, dict[str, set[str]]]:
    """family -> built-in name -> the modules that define that plug-in (its own)."""
    import jaxcult.data
    import jaxcult.eval
    import jaxcult.probes
    import jaxcult.recipes
    import jaxcult.schedules
    import jaxcult.tasks
    from jaxcult import models

    def own(entry) -> set[str]:
        if isinstance(entry, models.Architecture):
            return {entry.config_class.__module__, entry.module_class.__module__,
                    f"jaxcult.models.{entry.name}_family"}
        if isinstance(entry, jaxcult.recipes.Recipe):
            return {f"jaxcult.recipes.{entry.name}"}
        return {entry.__module__}

    found = {family: {name: own(entry) for name, entry in registry} for family, registry in (
        ("task", jaxcult.tasks.TASKS), ("dataset", jaxcult.data.DATASETS),
        ("schedule", jaxcult.schedules.SCHEDULES), ("evaluator", jaxcult.eval.EVALUATORS),
        ("probe", jaxcult.probes.PROBES), ("architecture", models.ARCHITECTURES),
        ("recipe", jaxcult.recipes.RECIPES))}
    for _, architecture in models.ARCHITECTURES:
        for model_type in architecture.model_types:
            found["architecture"][model_type] = own(architecture)
    return found


def _strings(node: ast.AST) -> list[str] | None:
    """The strings of a constant operand (a string, or a tuple/list/set of them), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts and \
            all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def name_comparisons(source: str, names: dict) -> list[tuple[int, str, str]]:
    """(line, family, name) of each comparison of a family's choice with a built-in name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        constants = [s for o in operands for s in (_strings(o) or [])]
        chosen = " ".join(ast.unparse(o) for o in operands if _strings(o) is None)
        for family, words in MARKERS.items():
            if any(w in chosen for w in words):
                found += [(node.lineno, family, s) for s in constants if s in names[family]]
    return found


def _modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


def test_the_schema_names_no_plugin():
    names = {n for family in builtin_names().values() for n in family}
    found = []
    for module, path in _modules():
        if layer(module) not in SCHEMA:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names and \
                    (module, node.value) not in SCHEMA_ALLOWED:
                found.append((module, node.lineno, node.value))
    assert found == []


def test_no_module_below_the_command_line_compares_plugin_names():
    names = builtin_names()
    found = []
    for module, path in _modules():
        if layer(module) in ("cli", "__init__"):
            continue
        for line, family, name in name_comparisons(path.read_text(encoding="utf-8"), names):
            if module not in names[family][name]:
                found.append((module, line, family, name))
    assert found == []


def test_the_checks_see_what_they_look_for():
    names = builtin_names()
    source = ("if config.task.name in ('classification', 'multiple_choice'): pass\n"
              "if backbone.config.model_type == 'bert': pass\n"
              "if config.model.name != 'random': pass\n"     # a model source, not a schedule
              "if rules == 'mlqa': pass\n")                  # a scoring rule, not the dataset
    assert name_comparisons(source, names) == [(1, "task", "classification"),
                                               (1, "task", "multiple_choice"),
                                               (2, "architecture", "bert")]
