"""The dataset registry: a dataset reads records (plain dicts) per language and split.

A dataset says what its records look like (`record_format`); a task family says which formats
it can tokenise, so any task reads any dataset of a format it knows. Record formats of the
built-ins:

- `text_label`: `{"text", "label"}`, or sentence pairs `{"text", "text_pair", "label"}`;
- `multiple_choice`: `{"context", "choices": [text, ...], "label"}`;
- `squad`: `{"id", "question", "context", "answers": [text], "starts": [int]}`;
- `chat`: `{"messages": [{"role", "content"}, ...]}`;
- `text`: `{"text"}` (language modelling).

A dataset reads its training corpus (`read_train`: the source language's `train` and
`validation`) and its evaluation corpus (`read_eval`: any language's `validation` or `test`);
for most datasets both are the same files. `read_file` reads `data.train_file`, by default a
JSONL file of records in the dataset's format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcult.config import DataConfig, settings_as
from jaxcult.errors import UserError
from jaxcult.registry import Registry, subclasses_of

Record = dict[str, Any]


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know about a dataset before reading it."""

    record_format: str
    languages: tuple[str, ...]       # languages it can be scored on (the default targets)
    labels: tuple[str, ...] = ()     # class names of `label` fields (empty: no labels)
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. {"qa_scoring": "mlqa"}


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


_REQUIRED = {  # format -> field -> check
    "text_label": {"text": _is_text, "label": lambda v: isinstance(v, int)},
    "multiple_choice": {"context": _is_text, "label": lambda v: isinstance(v, int),
                        "choices": lambda v: isinstance(v, list) and len(v) > 1
                        and all(map(_is_text, v))},
    "chat": {"messages": lambda v: isinstance(v, list) and bool(v)},
    "text": {"text": _is_text},
}


def check_record(record: Any, record_format: str, where: str) -> Record:
    """A record of a built-in format, or a one-line error naming `where` and the field."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(record).__name__}")
    for name, ok in _REQUIRED.get(record_format, {}).items():
        if name not in record:
            raise UserError(f"{where}: missing field {name!r} (a {record_format} record needs "
                            f"{', '.join(_REQUIRED[record_format])})")
        if not ok(record[name]):
            raise UserError(f"{where}: field {name!r} has an unexpected value {record[name]!r:.60}")
    return record


def read_jsonl(path: Path, record_format: str) -> list[Record]:
    """A JSONL file of records in `record_format`; every error names the file and line."""
    return read_checked_jsonl(path, lambda record, where: check_record(record, record_format, where))


def read_json(path: Path) -> Any:
    """A whole JSON file; a missing file or bad JSON is an error naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a JSON file ({error})") from None


def read_checked_jsonl(path: Path, check: Callable[[Any, str], Any]) -> list:
    """The non-empty lines of a JSONL file, each passed through `check(record, "file:line")`;
    a missing file, bad UTF-8, bad JSON or no record at all is an error naming the place."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        records.append(check(record, f"{path}:{number}"))
    if not records:
        raise UserError(f"{path}: no records")
    return records


def decoded(value: Any) -> str:
    """A prepared (TFDS) text feature, bytes, as str (for `Dataset.from_prepared`)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Dataset:
    """Base class of datasets: override `info` and `read` (or `read_train` / `read_eval`). Its
    own settings are its `Settings` (a subclass of `DataConfig`: keys of the `data` section);
    every method receives the run's `data` section as an instance of it."""

    name = "dataset"
    Settings: type[DataConfig] = DataConfig
    prepared: str | None = None  # its jaxcult TFDS builder (`data.source: tfds`), if any

    def info(self, config: DataConfig) -> DatasetInfo:
        raise NotImplementedError

    def read(self, config: DataConfig, language: str, split: str) -> list[Record]:
        raise NotImplementedError

    def read_train(self, config: DataConfig, language: str, split: str) -> list[Record]:
        """The training corpus: `split` is `train` or `validation` of the source language."""
        return self.read(config, language, split)

    def read_eval(self, config: DataConfig, language: str, split: str) -> list[Record]:
        """The evaluation corpus: `split` is `validation` or `test` of any scored language."""
        return self.read(config, language, split)

    def read_file(self, config: DataConfig, path: Path) -> list[Record]:
        """`data.train_file`: JSONL records in this dataset's format (datasets may read others)."""
        return read_jsonl(path, self.info(config).record_format)

    def prepared_split(self, language: str, split: str, evaluation: bool = False) -> str:
        """The prepared split holding `split` of `language` in the training corpus, or with
        `evaluation` in the evaluation corpus (the builders name the source language's
        `split`, every other one `<split>_<language>`)."""
        return split if language == "en" else f"{split}_{language}"

    def from_prepared(self, example: dict, config: DataConfig) -> Record:
        """A prepared (TFDS) example as the record `read` gives for the same line of the files."""
        raise NotImplementedError

    def training_lines(self, config: DataConfig) -> tuple[list[Path], Callable[[Any, str], Record]]:
        """`data.source: stream`: the JSONL files of the training split, in order, and the
        check that turns a parsed line (and its `file:line`) into a record."""
        raise UserError(f"data.source=stream: {self.name} is not read from JSONL lines (stream "
                        f"text_jsonl or chat_jsonl; prepared datasets: data.source=tfds)")

    def local_root(self, config: DataConfig) -> Path:
        """`data.manual_dir`, required by datasets read from local files."""
        if config.manual_dir is None:
            raise UserError(f"data.manual_dir: {self.name} reads local files; set the folder "
                            f"that holds them")
        return Path(config.manual_dir).expanduser()


DATASETS: Registry[type[Dataset]] = Registry("dataset", check=subclasses_of(Dataset))


def register_dataset(name: str, *, default: bool = False):
    """Class decorator: register a `Dataset` subclass under `name` (sets its `name`)."""
    return DATASETS.named_class(name, default=default)


def resolve_dataset(config: DataConfig) -> Dataset:
    """The dataset of `data.name` (a registered name or `pkg.mod:Class`); its methods expect
    the `data` section as the dataset's own settings (what the config loader makes of it)."""
    dataset = DATASETS.get(config.name, "data.name")()
    if config.name is not None and ":" in config.name:
        dataset.name = config.name
    settings_as(config, dataset.Settings, "data")  # the settings fit, whoever built them
    return dataset
