"""Keys of earlier config schemas, and where they live now (docs/configuration.md).

Plug-ins own their settings since the schema stopped declaring them centrally: the settings
that were plug-in specific now sit in the plug-in's section, and the `options` mappings are
gone (their keys are the section's own). Configs written before — users' files, and the
`config.yaml` of every earlier run directory, which lists every key of its time — keep working
through this table: `MOVED` keys are rewritten to their new place (with a note), `FLATTENED`
mappings are merged into their section, and `RETIRED` keys that restate their old default are
dropped where the plug-in does not declare them (an old run directory lists
`task.doc_stride: 128` whatever its task family).
"""

from __future__ import annotations

import logging
from typing import Any

from jaxcult.errors import UserError

log = logging.getLogger(__name__)

# old key -> new key (`N` in a path: list index N). An evaluator entry without a name is the
# task family's own evaluator.
MOVED: dict[str, str] = {
    "model.pooling": "task.pooling",
    "task.evaluator": "task.evaluators.0.name",
    "task.n_best": "task.evaluators.0.n_best",
    "task.max_answer_length": "task.evaluators.0.max_answer_length",
    "task.scoring": "task.evaluators.0.scoring",
}
# mappings whose keys became their section's own (`*`: every entry of a list section)
FLATTENED = ("task.options", "data.options", "schedule.options", "probes.*.options")
# section -> {key: its default in the schema that declared it centrally}
RETIRED: dict[str, dict[str, Any]] = {
    "model": {"pooling": "cls"},
    "task": {"evaluator": None, "options": {}, "head": "jaxcult", "doc_stride": 128,
             "max_answer_length": 30, "n_best": 20, "scoring": "dataset"},
    "schedule": {"order": None, "random_first": False, "seed": None, "options": {}},
    "data": {"options": {}},
    "probes": {"options": {}},
}


def drop_retired(section: str, values: dict, declared: set[str]) -> dict:
    """`values` of a plug-in section without the retired keys that restate their old default
    and that the plug-in (whose keys are `declared`) does not declare."""
    old = RETIRED.get(section, {})
    return {k: v for k, v in values.items()
            if not (k in old and k not in declared and v == old[k])}


def _parent(tree: dict, parts: list[str], create: bool) -> Any:
    """The mapping that holds the last part of a path (created on the way when `create`)."""
    node: Any = tree
    for part in parts[:-1]:
        if isinstance(node, list):
            index = int(part)
            while create and len(node) <= index:
                node.append({})
            if index >= len(node):
                return None
            if isinstance(node[index], str):  # an evaluator given by name alone
                node[index] = {"name": node[index]}
            node = node[index]
        elif isinstance(node, dict):
            if part not in node:
                if not create:
                    return None
                node[part] = [] if parts[parts.index(part) + 1].isdigit() else {}
            node = node[part]
        else:
            return None
    return node if isinstance(node, dict) else None


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy(v) for v in tree]
    return tree


def _move(tree: dict, old: str, new: str, sources: dict) -> None:
    section, key = old.split(".")
    holder = _parent(tree, old.split("."), create=False)
    if holder is None or key not in holder:
        return
    where = sources.get(old, "config")
    given_later = where.startswith("command line") and \
        not sources.get(new, "").startswith("command line")
    if holder[key] == RETIRED.get(section, {}).get(key, object()) and not given_later:
        del holder[key]  # the old default restated in a file: nothing to move
        return
    target = _parent(tree, new.split("."), create=True)
    leaf = new.split(".")[-1]
    if target is None or (leaf in target and not given_later):
        raise UserError(f"{where}: {old} is the earlier name of {new}, and both are given")
    target[leaf] = holder.pop(key)
    sources[new] = where
    log.warning("note: %s: %s is now %s (docs/configuration.md)", where, old, new)


def _flatten(section: dict, key: str, prefix: str, sources: dict) -> None:
    values = section.get("options")
    if not isinstance(values, dict) or not values:
        return
    del section["options"]
    where = sources.get(f"{prefix}.options", "config")
    for name, value in values.items():
        if name in section:
            raise UserError(f"{where}: {prefix}.options.{name} and {prefix}.{name} are both "
                            f"given ({key}'s options are its own keys now)")
        section[name] = value
        sources[f"{prefix}.{name}"] = sources.get(f"{prefix}.options.{name}", where)
    log.warning("note: %s: the keys of %s.options are now keys of %s (docs/configuration.md)",
                where, prefix, prefix)


def rewrite(tree: dict, sources: dict) -> dict:
    """A copy of `tree` with every earlier key at its new place (sources follow the values)."""
    tree = _copy(tree)
    for old, new in MOVED.items():
        _move(tree, old, new, sources)
    for path in FLATTENED:
        section, _, rest = path.partition(".")
        entries = tree.get(section)
        if rest.startswith("*.") and isinstance(entries, list):
            for i, entry in enumerate(entries):
                if isinstance(entry, dict):
                    _flatten(entry, f"{section}[{i}]", f"{section}.{i}", sources)
        elif isinstance(entries, dict):
            _flatten(entries, section, section, sources)
    return tree
