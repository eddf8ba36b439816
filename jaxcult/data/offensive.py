"""Offensive-language tasks per culture (Surveys→Narratives' evaluation), from user files.

Layout: `<tasks dir>/<culture>/<task>.{jsonl,csv,tsv}`, one file per task (its stem names the
task), each example with a `text` and a `label`. Labels: offensive = 1, "1", true, "offensive",
"off", "hate", "abusive", "toxic"; not offensive = 0, "0", false, "not offensive", "not",
"none", "normal", "non-offensive" (case-insensitive). Anything else is an error naming the
file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from jaxcult.errors import UserError

OFFENSIVE = ("1", "true", "offensive", "off", "hate", "abusive", "toxic")
NOT_OFFENSIVE = ("0", "false", "not offensive", "not", "none", "normal", "non-offensive")
SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class Example:
    text: str
    offensive: bool


def _label(value, where: str) -> bool:
    name = str(value).strip().lower()
    if name in OFFENSIVE:
        return True
    if name in NOT_OFFENSIVE:
        return False
    raise UserError(f"{where}: label {value!r} is neither offensive ({', '.join(OFFENSIVE)}) nor "
                    f"not offensive ({', '.join(NOT_OFFENSIVE)})")


def _rows(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise UserError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        return rows
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
    return list(enumerate(reader, 2))


def read_task(path: Path) -> list[Example]:
    """The examples of one task file (layout in the module docstring)."""
    examples = []
    for number, row in _rows(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or not str(row.get("text") or "").strip():
            raise UserError(f"{where}: expected a non-empty 'text' and a 'label'")
        if row.get("label") in (None, ""):
            raise UserError(f"{where}: missing 'label'")
        examples.append(Example(str(row["text"]).strip(), _label(row["label"], where)))
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def read_culture_tasks(folder: Path) -> dict[str, list[Example]]:
    """Every task of one culture's folder, by task name (sorted)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no task folder (expected <tasks>/<culture>/<task>.jsonl|csv|tsv)")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no task files (*.jsonl, *.csv, *.tsv)")
    return {path.stem: read_task(path) for path in files}
