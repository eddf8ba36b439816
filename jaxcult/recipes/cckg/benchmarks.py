"""Cultural multiple-choice questions from the files a user supplies (the benchmarks are
CC BY-NC-SA and never shipped).

A layout names the columns: the question, its options and its answer. Presets follow the
public releases as their evaluation code reads them (check your copy; `columns` overrides each):
- `indoculture` (indolem/IndoCulture): `context`; `options`, a list whose items may start with
  their letter ("A. ..."); `answer`, a letter.
- `arabculture` (MBZUAI/ArabCulture): `first_statement`; `options`, a mapping whose `text`
  holds the list; `answer_key`, a mapping whose `english_answer_key` is a letter; rows whose
  `should_discard` is yes are left out (counted).
- `jaxcult`: `question`, `options` (a list), `answer` (a letter, or the option's 0-based index).
A cell holding a list or mapping is read as JSON, else as a Python literal (CSV exports of the
Hugging Face releases write either); `a.b` names key `b` of the mapping in column `a`. Files
are `.csv` (UTF-8, header row) or `.jsonl`.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError

LETTERS = string.ascii_uppercase
YES = {"yes", "true", "1", "y"}


@dataclass(frozen=True)
class Layout:
    question: str
    options: str
    answer: str
    discard: str | None = None     # a column whose yes-like value leaves the row out


LAYOUTS = {
    "indoculture": Layout("context", "options", "answer"),
    "arabculture": Layout("first_statement", "options.text", "answer_key.english_answer_key",
                          discard="should_discard"),
    "jaxcult": Layout("question", "options", "answer"),
}


@dataclass(frozen=True)
class Question:
    benchmark: str
    number: int          # the row's position among the file's kept rows
    where: str           # file:line (or file:row) for messages
    question: str
    options: tuple[str, ...]
    answer: int          # index into options


def _cell(value: Any) -> Any:
    """A cell as data: lists and mappings written as JSON or Python literals are parsed."""
    if not isinstance(value, str) or value.strip()[:1] not in ("[", "{"):
        return value
    text = value.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return value


def _field(row: dict, name: str, where: str) -> Any:
    head, *rest = name.split(".")
    if head not in row:
        raise UserError(f"{where}: no column {head!r} (columns: {', '.join(map(str, row))}); "
                        f"set the benchmark's columns to match the file")
    value = _cell(row[head])
    for key in rest:
        if not isinstance(value, dict) or key not in value:
            raise UserError(f"{where}: column {head!r} has no key {key!r} (found: "
                            f"{str(row[head])[:80]!r})")
        value = _cell(value[key])
    return value


def _strip_letter(option: str, index: int) -> str:
    """'A. text' / 'A) text' -> 'text' when the letter is the option's own."""
    match = re.match(rf"\s*{LETTERS[index]}\s*[.):]\s*", option)
    return option[match.end():] if match else option.strip()


def _answer(value: Any, options: tuple[str, ...], where: str) -> int:
    text = str(value).strip()
    if len(text) == 1 and text.upper() in LETTERS[:len(options)]:
        return LETTERS.index(text.upper())
    if text.isdigit() and int(text) < len(options):
        return int(text)
    raise UserError(f"{where}: answer {value!r} is neither a letter among "
                    f"{LETTERS[:len(options)]} nor an option index below {len(options)}")


def _object_row(row: Any, where: str) -> tuple[str, dict]:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object")
    return where, row


def _rows(path: Path) -> list[tuple[str, dict]]:
    if path.suffix == ".jsonl":
        return read_checked_jsonl(path, _object_row)
    if path.suffix != ".csv":
        raise UserError(f"{path}: expected a .csv or .jsonl file")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(text.splitlines(keepends=True))
    return [(f"{path}:row {number}", row) for number, row in enumerate(reader, 1)]


def read_questions(name: str, path: Path, layout: Layout) -> tuple[list[Question], int]:
    """The file's questions in order and how many rows the layout's discard column left out."""
    questions, discarded = [], 0
    for where, row in _rows(path):
        if layout.discard and str(_field(row, layout.discard, where)).strip().lower() in YES:
            discarded += 1
            continue
        options = _field(row, layout.options, where)
        if not isinstance(options, list | tuple) or len(options) < 2 or not all(
                isinstance(o, str) and o.strip() for o in options):
            raise UserError(f"{where}: {layout.options!r} must be a list of at least two "
                            f"non-empty options, found {str(options)[:80]!r}")
        options = tuple(_strip_letter(o, i) for i, o in enumerate(options))
        question = str(_field(row, layout.question, where)).strip()
        if not question:
            raise UserError(f"{where}: empty {layout.question!r}")
        questions.append(Question(name, len(questions), where, question, options,
                                  _answer(_field(row, layout.answer, where), options, where)))
    if not questions:
        raise UserError(f"{path}: no questions")
    return questions, discarded
