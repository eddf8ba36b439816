"""MMLU test questions from the standard CSV files the user supplies (the general-capability
check beside Surveys→Narratives' cultural matrix; scored by `jaxcult.eval.mmlu`).

Layout: `<root>/<subject>_test.csv` or `<root>/test/<subject>_test.csv` (the original
release's `data/test/`): no header, six columns — question, the options A-D, the answer letter.
A first row naming the columns (`question|input, A, B, C, D, answer|target`) is skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxcult.errors import UserError

LETTERS = ("A", "B", "C", "D")
# the eight subjects the official Surveys→Narratives evaluation reads (src/test_mmlu.py)
OFFICIAL_SUBJECTS = ("college_biology", "college_chemistry", "college_physics",
                     "college_mathematics", "high_school_biology", "high_school_chemistry",
                     "high_school_macroeconomics", "high_school_statistics")
_HEADERS = ({"question", "input"}, {"answer", "target"})


@dataclass(frozen=True)
class MMLUQuestion:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str   # one of LETTERS


def _subject_file(root: Path, subject: str) -> Path:
    for path in (root / f"{subject}_test.csv", root / "test" / f"{subject}_test.csv"):
        if path.is_file():
            return path
    raise UserError(f"{root}: no {subject}_test.csv (nor test/{subject}_test.csv); MMLU files are "
                    f"the standard CSVs: question, A, B, C, D, answer")


def _is_header(row: list[str]) -> bool:
    cells = [c.strip().lower() for c in row]
    return len(cells) == 6 and cells[0] in _HEADERS[0] and cells[5] in _HEADERS[1]


def read_subject(root: Path, subject: str) -> list[MMLUQuestion]:
    path = _subject_file(root, subject)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    questions = []
    for number, row in enumerate(rows, 1):
        if number == 1 and _is_header(row):
            continue
        if not row:
            continue
        if len(row) != 6:
            raise UserError(f"{path}:{number}: expected 6 columns (question, A, B, C, D, answer), "
                            f"found {len(row)}")
        answer = row[5].strip().upper()
        if answer not in LETTERS:
            raise UserError(f"{path}:{number}: answer {row[5]!r} is not one of A, B, C, D")
        questions.append(MMLUQuestion(subject, row[0], tuple(row[1:5]), answer))
    if not questions:
        raise UserError(f"{path}: no questions")
    return questions


def read_mmlu(root: Path, subjects: Sequence[str], limit: int | None = None,
              seed: int = 0) -> list[MMLUQuestion]:
    """The subjects' test questions in subject order; at most `limit` of them, drawn without
    replacement (seeded) and kept in that order."""
    questions = [q for subject in subjects for q in read_subject(root, subject)]
    if limit is None or limit >= len(questions):
        return questions
    keep = np.random.default_rng(seed).choice(len(questions), size=limit, replace=False)
    return [questions[i] for i in sorted(keep)]
