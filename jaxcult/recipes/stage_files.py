"""Stage outputs as append-only JSONL with a provenance file beside them.

A stage appends each finished batch in one write, so a killed stage loses at most the batch in
flight: on the next start, records already written are skipped and a torn last line (the write
the kill interrupted) is dropped. `<file>.provenance.json` records what made the records (models,
prompts' hash, decoding settings, seed); resuming with different settings is an error rather
than a file mixing two experiments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.own_files import read_json_object
from jaxcult.rundir import append_whole, open_for_append, write_text_atomic


def provenance_path(path: Path) -> Path:
    return path.with_name(path.stem + ".provenance.json")


def check_provenance(path: Path, provenance: dict) -> None:
    """Write `provenance` for a new output; for an existing one, insist that it matches."""
    meta = provenance_path(path)
    if path.exists() and meta.exists():
        old = read_json_object(meta)
        changed = sorted(k for k in {*old, *provenance} if old.get(k) != provenance.get(k))
        if changed:
            raise UserError(f"{path}: made with other settings ({', '.join(changed)} differ from "
                            f"{meta}); use another output folder, or delete the file to redo "
                            f"the stage")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta, json.dumps(provenance, indent=1, sort_keys=True) + "\n")


def read_records(path: Path) -> list[dict]:
    """The records of a stage output (none if it does not exist yet); a torn last line, left
    by an interrupted write, is removed from the file."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the interrupted last write
                path.write_text(text[:text.rfind("\n") + 1], encoding="utf-8")
                break
            raise UserError(f"{path}:{number}: invalid JSON (was the file edited?)") from None
    return records


def append_records(path: Path, records: list[dict]) -> None:
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_for_append(path)
    try:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        append_whole(fd, text.encode("utf-8"), path)  # whole records or none: a full disk
        os.fsync(fd)                                  # leaves no torn line behind
    finally:
        os.close(fd)
