"""Readers of the files jaxcult itself writes (metrics, events, Fisher and probe logs, summaries).

They are read back by `plot`, `--resume`, sweeps and recipes, and they can be damaged: a torn
write, a disk error, a hand edit. Each problem is one `UserError` naming `file:line` and what was
expected, raised before anything derived from the file is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxcult.errors import UserError


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _decoded(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#04x}); the file is "
                        f"damaged") from None


def _checked(record: Any, where: str, required: tuple[str, ...]) -> dict:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, found {_kind(record)}")
    missing = [key for key in required if key not in record]
    if missing:
        raise UserError(f"{where}: missing {missing[0]!r} (a record here has "
                        f"{', '.join(map(repr, required))})")
    return record


def read_json_object(path: Path, required: tuple[str, ...] = ()) -> dict:
    """One JSON object holding the `required` keys."""
    text = _decoded(path)
    try:
        found = json.loads(text)
    except json.JSONDecodeError as err:
        cut = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
        torn = " (cut short?)" if cut else ""
        raise UserError(f"{path}:{err.lineno}: not valid JSON{torn}: {err.msg}") from None
    return _checked(found, str(path), required)


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    """The objects of a JSONL log, each holding the `required` keys; a missing file is empty."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(_decoded(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        records.append(_checked(found, f"{path}:{number}", required))
    return records
