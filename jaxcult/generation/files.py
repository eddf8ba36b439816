"""Generation over a JSONL file of prompts: resumable, in input order, errors per record.

Input lines are `{"prompt": "..."}` or `{"messages": [{"role", "content"}, ...]}` (optionally
with an `id`). The file is processed in windows of prompts; inside a window prompts are sorted
by length into buckets, and the window's results are appended to the output in input order, so
after an interruption the output holds complete lines for a prefix of the input and a restart
skips them. Each output line carries the input's index, id and a hash of its prompt (a restart
with another prompt file is refused), the completion, why it stopped, and token counts; a bad
record or a prompt that fits no bucket gets an `error` instead, and the rest of the file runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxcult.errors import UserError
from jaxcult.generation.api import generate_ids
from jaxcult.generation.engine import Completion, Generator
from jaxcult.generation.prompts import encode, is_chat


def _prompt_of(record: Any, chat: bool) -> str | list:
    """The prompt (text or chat) of one input record; ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object with 'prompt' or 'messages'")
    if "messages" in record:
        if not is_chat(record["messages"]):
            raise ValueError("'messages' must be a list of {role: system|user|assistant, content}")
        return record["messages"]
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    raise ValueError("missing text field 'prompt' (or a 'messages' list)")


def read_records(path: Path) -> list[tuple[Any, str | None]]:
    """(parsed record or None, parse error or None) per non-empty line."""
    if not path.is_file():
        raise UserError(f"{path}: prompt file not found")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not lines:
        raise UserError(f"{path}: no prompts (the file is empty)")
    records = []
    for line in lines:
        try:
            records.append((json.loads(line), None))
        except json.JSONDecodeError as error:
            records.append((None, f"invalid JSON ({error.msg})"))
    return records


def prompt_hash(record: Any) -> str:
    return hashlib.sha1(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def done_lines(out: Path, records: list[tuple[Any, str | None]]) -> int:
    """Complete output lines of an earlier run (a torn last line is dropped); refuses an
    output that belongs to other prompts."""
    if not out.exists():
        return 0
    if out.is_dir():
        raise UserError(f"{out}: is a directory, expected the output JSONL file")
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # a line torn by an interruption: written again
            raise UserError(f"{out}:{number + 1}: not a JSON line; not an output of this command")
        if number >= len(records) or row.get("prompt_hash") != prompt_hash(records[number][0]):
            raise UserError(f"{out}:{number + 1}: written for other prompts than {len(records)} "
                            f"lines of this file; use another --out")
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        out.write_text("".join(kept), encoding="utf-8")
    return len(kept)


def output_line(index: int, record: Any, completion: Completion) -> dict:
    row = {"index": index, "prompt_hash": prompt_hash(record)}
    if isinstance(record, dict) and "id" in record:
        row["id"] = record["id"]
    if completion.error is not None:
        return {**row, "error": completion.error}
    return {**row, "completion": completion.text, "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": len(completion.token_ids)}


def generate_file(generator: Generator, prompts: Path, out: Path, *, chat: bool = False,
                  system: str | None = None, window: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Complete every prompt of `prompts` into `out`; returns counts (done, skipped, errors)."""
    records = read_records(prompts)
    first = done_lines(out, records)
    window = window or generator.config.batch_size * 8
    errors = 0
    with open(out, "a", encoding="utf-8") as handle:
        for start in range(first, len(records), window):
            chunk = records[start:start + window]
            texts, failures = {}, {}
            for offset, (record, problem) in enumerate(chunk):
                try:
                    if problem is not None:
                        raise ValueError(problem)
                    texts[offset] = _prompt_of(record, chat)
                except ValueError as error:
                    failures[offset] = str(error)
            runnable = sorted(texts)
            ids = encode([texts[o] for o in runnable], generator.tokenizer, chat=chat, system=system)
            results = dict(zip(runnable, generate_ids(generator, ids, first_batch=start)))
            for offset, message in failures.items():
                results[offset] = Completion("", [], "error", 0, f"record {start + offset + 1}: "
                                                                f"{message}")
            for offset, (record, _) in enumerate(chunk):
                errors += results[offset].error is not None
                handle.write(json.dumps(output_line(start + offset, record, results[offset]),
                                        ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            if on_progress is not None:
                on_progress(start + len(chunk), len(records))
    return {"prompts": len(records), "skipped": first, "generated": len(records) - first - errors,
            "errors": errors}
