"""The package is the architecture: layers import only downwards, and nothing imports in a cycle.

Every `import` statement of every module counts, also those inside functions (a lazy import
still couples the modules). Layers, top down (docs/architecture.md):
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcult"
LAYERS = [  # top down; a module may import its own layer and the layers below it
    ["__init__", "cli"],
    ["recipes"],
    ["run"],
    ["config_loading", "config_plugins"],
    ["trainers"],
    ["schedules", "probes", "fisher"],
    ["tasks"],
    ["eval"],
    ["remote", "serving"],
    ["generation"],
    ["hub"],
    ["peft"],
    ["models"],
    ["data"],
    ["sharding", "checkpoint", "tracking", "report", "rundir", "locks", "own_files", "metrics",
     "registry", "assets", "truncation"],
    ["config", "config_aliases", "config_sweep", "errors"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """jaxcult modules imported anywhere in the file (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("jaxcult"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxcult"):
            for alias in node.names:  # `from jaxcult.data import copa` imports jaxcult.data.copa
                candidate = f"{node.module}.{alias.name}"
                known = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() \
                    or (PACKAGE.parent / candidate.replace(".", "/")).is_dir()
                found.add(candidate if known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_belongs_to_a_layer():
    assert sorted({layer(m) for m in graph()} - set(RANK)) == []


def test_layers_import_only_downwards():
    upward = [(m, i) for m, deps in graph().items() for i in deps
              if RANK[layer(i)] < RANK[layer(m)]]
    assert upward == []


def test_trainers_never_import_hub_or_models():
    found = [(m, i) for m, deps in graph().items() if layer(m) == "trainers"
             for i in deps if layer(i) in ("hub", "models")]
    assert found == []


def test_cli_imports_only_use_cases_recipes_config_and_errors():
    allowed = ("jaxcult.cli", "jaxcult.run", "jaxcult.recipes", "jaxcult.config",
               "jaxcult.config_loading", "jaxcult.errors")
    found = [(m, i) for m, deps in graph().items() if layer(m) == "cli"
             for i in deps if not i.startswith(allowed)]
    assert found == []


def test_no_import_cycles():
    edges = graph()
    modules = set(edges)

    def resolve(name: str) -> str | None:  # `jaxcult.data` the package, or one of its modules
        return name if name in modules else None

    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(filter(None, map(resolve, edges[node]))):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_catch_violations(tmp_path):
    """The helpers really see function-level imports and `from package import module`."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from jaxcult import assets\n    import jaxcult.models\n")
    assert imports_of(source) == {"jaxcult.assets", "jaxcult.models"}
