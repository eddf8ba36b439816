"""Offensive-language tasks per culture (Surveys→Narratives' evaluation), from user files.

Layout: `<tasks dir>/<culture>/<task>.{jsonl,csv,tsv}`, one file per task (its stem names the
task), each example with a `text` and a `label`. By default a task is binary: offensive = 1,
"1", true, "offensive", "off", "hate", "abusive", "toxic"; not offensive = 0, "0", false, "not
offensive", "not", "none", "normal", "non-offensive" (case-insensitive).

A task with its own label set and prompt (the official suite's hate speech HS / NOT_HS, vulgar
V / -, spam Spam / Ham, fine-grained 5- and 7-class tasks, ...) declares them in
`<task>.yaml` beside its file:

    prompt: "... {text} ... 1. Spam, 2. Not spam ... Answer:"
    labels:                       # in order: the official reading checks them in this order
      Spam: {answer: "1", words: [spam]}
      Ham: {answer: "2", words: [not spam, ham]}

`answer` is what the prompt asks the model to answer for the label, `words` what else reads as
it. The file's labels must then be among the declared ones (matched ignoring case). Anything
else is an error naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jaxcult.errors import UserError

OFFENSIVE = ("1", "true", "offensive", "off", "hate", "abusive", "toxic")
NOT_OFFENSIVE = ("0", "false", "not offensive", "not", "none", "normal", "non-offensive")
SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class Example:
    text: str
    label: bool | str   # binary tasks: offensive or not; declared label sets: the label's name


@dataclass(frozen=True)
class Choice:
    """One label of a task: the answer the prompt asks for it and the words read as it."""

    label: bool | str
    answer: str
    words: tuple[str, ...]


# The binary task: "1" offensive, "2" not offensive; the longest matching word decides.
OFFENSIVE_CHOICES = (
    Choice(True, "1", ("offensive",)),
    Choice(False, "2", ("not offensive", "non-offensive", "non offensive", "nonoffensive",
                        "inoffensive", "not")),
)
# ... and the phrases the official evaluation's substring rule checks for it
OFFICIAL_OFFENSIVE_CHOICES = (Choice(True, "1", ("offensive",)),
                              Choice(False, "2", ("not offensive",)))


@dataclass
class Task:
    name: str
    examples: list[Example]
    prompt: str | None = None                      # None: the evaluation's default prompt
    choices: tuple[Choice, ...] = OFFENSIVE_CHOICES
    declared: dict = field(default_factory=dict)   # the `<task>.yaml` content (provenance)

    @property
    def labels(self) -> tuple:
        return tuple(c.label for c in self.choices)


def _binary_label(value, where: str) -> bool:
    name = str(value).strip().lower()
    if name in OFFENSIVE:
        return True
    if name in NOT_OFFENSIVE:
        return False
    raise UserError(f"{where}: label {value!r} is neither offensive ({', '.join(OFFENSIVE)}) nor "
                    f"not offensive ({', '.join(NOT_OFFENSIVE)})")


def _declared_label(choices: tuple[Choice, ...]):
    by_name = {str(c.label).casefold(): c.label for c in choices}

    def label(value, where: str) -> str:
        try:
            return by_name[str(value).strip().casefold()]
        except KeyError:
            raise UserError(f"{where}: label {value!r} is not one of the task's labels "
                            f"({', '.join(map(str, by_name.values()))})") from None
    return label


def read_label_set(path: Path) -> tuple[str, tuple[Choice, ...], dict]:
    """(prompt, choices, the file's content) of a task's `<task>.yaml`."""
    try:
        declared = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(declared, dict) or set(declared) != {"prompt", "labels"}:
        raise UserError(f"{path}: expected exactly the keys prompt and labels")
    prompt, labels = declared["prompt"], declared["labels"]
    if not isinstance(prompt, str) or "{text}" not in prompt:
        raise UserError(f"{path}: prompt must be a string holding {{text}}")
    if not isinstance(labels, dict) or len(labels) < 2:
        raise UserError(f"{path}: labels must map at least two label names to "
                        f"{{answer: ..., words: [...]}}")
    choices = []
    for name, spec in labels.items():
        if not isinstance(spec, dict) or not set(spec) <= {"answer", "words"} or "answer" not in spec:
            raise UserError(f"{path}: labels.{name}: expected {{answer: ..., words: [...]}}")
        words = spec.get("words") or []
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise UserError(f"{path}: labels.{name}.words: expected a list of words")
        choices.append(Choice(str(name), str(spec["answer"]).strip(),
                              tuple(w.strip().lower() for w in words)))
    answers = [c.answer for c in choices]
    if len(set(answers)) != len(answers) or not all(answers):
        raise UserError(f"{path}: every label needs its own non-empty answer, found {answers}")
    if len({str(c.label).casefold() for c in choices}) != len(choices):
        raise UserError(f"{path}: a label is declared twice (ignoring case)")
    return prompt, tuple(choices), declared


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


def read_task(path: Path) -> Task:
    """One task file with its declared label set, if any (layout in the module docstring)."""
    declared_file = path.with_suffix(".yaml")
    if declared_file.is_file():
        prompt, choices, declared = read_label_set(declared_file)
        task = Task(path.stem, [], prompt, choices, declared)
        label = _declared_label(choices)
    else:
        task, label = Task(path.stem, []), _binary_label
    for number, row in _rows(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or not str(row.get("text") or "").strip():
            raise UserError(f"{where}: expected a non-empty 'text' and a 'label'")
        if row.get("label") in (None, ""):
            raise UserError(f"{where}: missing 'label'")
        task.examples.append(Example(str(row["text"]).strip(), label(row["label"], where)))
    if not task.examples:
        raise UserError(f"{path}: no examples")
    return task


def read_culture_tasks(folder: Path) -> dict[str, Task]:
    """Every task of one culture's folder, by task name (sorted)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no task folder (expected <tasks>/<culture>/<task>.jsonl|csv|tsv)")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no task files (*.jsonl, *.csv, *.tsv)")
    return {path.stem: read_task(path) for path in files}
