"""Build a `RunConfig` from YAML files (with `base:` inheritance) and dotted overrides.

Every value remembers where it came from (a file or the command line) so that a validation
error can name the file and key path, what was expected and what was found. Keys of earlier
schemas are rewritten first (`config_aliases`); each plug-in section is validated by the
settings class of the plug-in it names (`config_plugins`), then the run config as a whole.
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from jaxcult.config import RunConfig
from jaxcult.config_aliases import rewrite
from jaxcult.config_plugins import plugin_checks, typed_tree
from jaxcult.errors import UserError

log = logging.getLogger(__name__)

COMMAND_LINE = "command line"
_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; syntax errors and duplicate keys name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read config file ({err})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections, found {type(data).__name__}")
    return data


def _merge(base: dict, update: dict, sources: dict, source: str, prefix: str = "") -> dict:
    """Deep-merge `update` into a copy of `base`; mappings merge, everything else replaces,
    except that `{"0": {...}}` (an override `section.0.key=value`) merges into entry 0 of a
    list of sections."""
    merged = dict(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(merged.get(key, []), list) and value and \
                all(str(k).isdigit() for k in value):
            merged[key] = _merge_entries(merged.get(key, []), value, sources, source, path)
        elif isinstance(value, dict):  # merged key by key, so that each leaf knows its source
            inner = merged[key] if isinstance(merged.get(key), dict) else {}
            merged[key] = _merge(inner, value, sources, source, path + ".")
        else:
            merged[key] = value
        sources[path] = source
    return merged


def _merge_entries(entries: list, update: dict, sources: dict, source: str, path: str) -> list:
    """Entries of a list of sections with `update` ({index: mapping}) merged into them."""
    entries = list(entries)
    for index, value in update.items():
        position = int(index)
        if position > len(entries) or not isinstance(value, dict):
            raise UserError(f"{source}: {path}.{index}: {path} has {len(entries)} entries; set "
                            f"a key of one of them, or of entry {len(entries)} to add one")
        if position == len(entries):
            entries.append({})
        entry = entries[position]
        entry = {"name": entry} if isinstance(entry, str) else entry
        entries[position] = _merge(entry if isinstance(entry, dict) else {}, value, sources,
                                   source, f"{path}.{index}.")
    return entries


def _load_tree(path: Path, sources: dict, chain: tuple[Path, ...] = ()) -> dict:
    """Resolve `base:` (a path or list of paths relative to the file) recursively."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise UserError(f"{path}: `base` inheritance forms a cycle: {cycle}")
    data = read_yaml(path)
    bases = data.pop("base", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise UserError(f"{path}: base: expected a file path or a list of paths, found {bases!r}")
    tree: dict = {}
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.exists():
            raise UserError(f"{path}: base: file {base_path} not found")
        tree = _merge(tree, _load_tree(base_path, sources, (*chain, path)), sources, str(base_path))
    return _merge(tree, data, sources, str(path))


def parse_override(text: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, with the value read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{COMMAND_LINE}: override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise UserError(f"{COMMAND_LINE}: override {text!r} has an empty key in {key!r}")
    tree: dict = {}
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


def _fields_at(loc: tuple, schema: type[BaseModel] = RunConfig) -> list[str]:
    """Valid key names of the config section that `loc` points into."""
    model: type[BaseModel] = schema
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _source_of(loc: tuple, sources: dict) -> str:
    for end in range(len(loc), 0, -1):
        key = ".".join(str(p) for p in loc[:end])
        if key in sources:
            return sources[key]
    return "config"


def describe_error(err: dict, sources: dict, schema: type[BaseModel] = RunConfig) -> str:
    """One readable line for one pydantic error (`schema`: the model that was validated)."""
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
    key = ".".join(str(p) for p in loc) or "(top level)"
    where = _source_of(loc, sources)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = err["fields"] if "fields" in err else _fields_at(loc, schema)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.6)
        if close:
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
        elif "own" in err:
            hint = f"its own keys: {', '.join(err['own']) or 'none'}"
        else:
            hint = f"valid keys: {', '.join(valid)}"
        owner = f" of {err['plugin']}" if "plugin" in err else ""
        return f"{where}: unknown key {key!r}{owner} ({hint})"
    found = err.get("input")
    found_text = f"found {found!r} ({type(found).__name__})"
    if kind in _EXPECTED:
        return f"{where}: {key}: expected {_EXPECTED[kind]}, {found_text}"
    if kind == "value_error":
        message = str(err.get("ctx", {}).get("error", err["msg"]))
        named = re.match(r"([a-z_]+\.[a-z_]+)[. :]", message)  # a validator naming the key
        if named and where == "config":
            where = _source_of(tuple(named.group(1).split(".")), sources)
        return f"{where}: {message}"
    expected = err["msg"].removeprefix("Input should be ").removeprefix("Value should be ")
    return f"{where}: {key}: expected {expected}, {found_text}"


def first_error(errors: list, sources: dict, schema: type[BaseModel]) -> str:
    """The first problem as one line, with the count of the others."""
    line = describe_error(errors[0], sources, schema)
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


_NO_EFFECT = re.compile(r"([a-z_]+)\.([a-z_]+) has no effect here: it only applies (.*)")


def _delete(tree: dict, loc: tuple) -> bool:
    """Remove the value at `loc` from `tree`; whether it was there."""
    node: Any = tree
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(node, dict) or loc[-1] not in node:
        return False
    del node[loc[-1]]
    return True


def _from_command_line(key: str, sources: dict) -> bool:
    return _source_of(tuple(key.split(".")), sources).startswith(COMMAND_LINE)


def _dormant_file_setting(err: dict, tree: dict, sources: dict) -> tuple[str, str] | None:
    """(key, why) of a file setting that a command-line override made ineffective, removed
    from `tree`: a setting of one plug-in when the override chose another (a fixed order
    under `schedule.name=gu`), or a setting that only applies with keys the override changed
    (the Fisher settings of a FUN experiment under `schedule.name=gu`); None for any other
    error."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden" and "plugin" in err:
        key = ".".join(map(str, loc))
        chooser = ".".join(map(str, (*loc[:-1], "name")))
        if chooser in sources and sources[chooser].startswith(COMMAND_LINE) and \
                not _from_command_line(key, sources) and _delete(tree, loc):
            return key, f"it is not a setting of the {err['plugin']} chosen there"
        return None
    found = _NO_EFFECT.search(str(err.get("ctx", {}).get("error", ""))) \
        if err["type"] == "value_error" else None
    if found is None:
        return None
    section, key, when = found.groups()
    context = re.findall(r"\b([a-z_]+\.[a-z_]+)\b", when)
    if _from_command_line(f"{section}.{key}", sources) or \
            not any(_from_command_line(k, sources) for k in context) or \
            not _delete(tree, (section, key)):
        return None
    return f"{section}.{key}", f"it only applies {when}"


def _validated(tree: dict) -> tuple[RunConfig | None, list[dict]]:
    """(the config, []) or (None, its errors): plug-in sections first, then the whole."""
    typed, errors, plugins = typed_tree(tree)
    if errors:
        return None, errors
    try:
        config = RunConfig.model_validate(typed)
    except ValidationError as exc:
        return None, exc.errors()
    errors = plugin_checks(config, plugins)
    return (None, errors) if errors else (config, [])


def validate(tree: dict, sources: dict, overridden: bool = False) -> RunConfig:
    """Validate a merged tree; the first problem becomes a `UserError` (count of others noted).

    With command-line overrides (`overridden`), a file setting that an override made
    ineffective (the Fisher settings of a FUN experiment compared under `schedule.name=gu`,
    a dataset's settings under another `data.name`) is dropped with a note instead of
    refusing the run; the same setting given on the command line, or contradicted within the
    files, stays an error."""
    tree = rewrite(tree, sources)
    while True:
        config, errors = _validated(tree)
        if config is not None:
            return config
        dropped = _dormant_file_setting(errors[0], tree, sources) if overridden else None
        if dropped is None:
            raise UserError(first_error(errors, sources, RunConfig))
        key, why = dropped
        log.warning("note: %s: %s has no effect with the command-line overrides (%s); "
                    "ignored", _source_of(tuple(key.split(".")), sources), key, why)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """The resolved run config: file (with bases) + overrides, validated."""
    sources: dict[str, str] = {}
    tree = _load_tree(Path(path), sources) if path is not None else {}
    for text in overrides:
        tree = _merge(tree, parse_override(text), sources, f"{COMMAND_LINE} {text!r}")
    return validate(tree, sources, overridden=bool(overrides))


def dump_config(config: RunConfig) -> str:
    """The YAML text written to `config.yaml` and shown by `--print-config`."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def same_config(saved: Path, config: RunConfig) -> bool:
    """Whether the config.yaml a run wrote at `saved` describes `config`. Compared as
    validated configs, not as text: a field added to the schema since it was written counts
    at its default (the behaviour of the version that wrote it), any value written differently
    is a change, and a file that no longer validates is one too."""
    try:
        earlier = validate(read_yaml(saved), {})
    except UserError:
        return False
    return earlier.to_dict() == config.to_dict()


def load_section(schema: type[BaseModel], path: Path, overrides: list[str] = ()) -> Any:
    """Any other config schema (e.g. a CLCA pipeline) from a YAML file (with `base:`) and
    overrides, with the same one-line errors as run configs."""
    sources: dict[str, str] = {}
    tree = _load_tree(Path(path), sources)
    for text in overrides:
        tree = _merge(tree, parse_override(text), sources, f"{COMMAND_LINE} {text!r}")
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        raise UserError(first_error(exc.errors(), sources, schema)) from None
