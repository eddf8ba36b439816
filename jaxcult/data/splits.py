"""The records of one run: training, validation and one evaluation split per language.

Every `data.*` key that selects records is applied here, the same way for every dataset:
`source_language`, `target_languages` (checked against the dataset's languages before anything
is read), `train_file` (its last 5% held out for validation), `eval_split`,
`max_train_examples` (with `subsample`) and `max_eval_examples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxcult.config import DataConfig
from jaxcult.data.prepared import (
    TrainRows,
    read_prepared,
    read_streamed,
    training_rows,
    uses_prepared,
)
from jaxcult.data.registry import Dataset, DatasetInfo, Record
from jaxcult.errors import UserError


@dataclass
class RecordSplits:
    train: list[Record] | TrainRows  # TrainRows: a prepared dataset's, read batch by batch
    validation: list[Record]
    tests: dict[str, list[Record]]  # language -> records of `data.eval_split`, source first
    info: DatasetInfo


def scored_languages(config: DataConfig, info: DatasetInfo, dataset: str) -> list[str]:
    """The source language, then the targets (default: every language of the dataset)."""
    targets = list(config.target_languages) or list(info.languages)
    unknown = [lang for lang in [config.source_language, *targets] if lang not in info.languages]
    if unknown:
        key = ("data.source_language" if unknown[0] == config.source_language
               else "data.target_languages")
        raise UserError(f"{key}: {dataset} has no language {unknown[0]!r} (available: "
                        f"{', '.join(info.languages)})")
    return [config.source_language] + [t for t in targets if t != config.source_language]


def train_file_path(config: DataConfig) -> Path:
    """data.train_file; a relative path is read from data.manual_dir (when it is set)."""
    path = Path(config.train_file).expanduser()
    if not path.is_absolute() and config.manual_dir is not None:
        path = Path(config.manual_dir).expanduser() / path
    return path


def held_out(records: list[Record], fraction: float = 0.05) -> tuple[list[Record], list[Record]]:
    """(train, validation) from one list: the last `fraction` (at least one) is held out."""
    cut = len(records) - max(1, int(len(records) * fraction))
    if cut < 1:
        raise UserError("data.train_file: too few records to hold out a validation part")
    return records[:cut], records[cut:]


def read_records(dataset: Dataset, config: DataConfig, seed: int = 0) -> RecordSplits:
    """Read every split a run needs; errors name the dataset, file or record."""
    info = dataset.info(config)
    languages = scored_languages(config, info, dataset.name)
    source = config.source_language
    if uses_prepared(dataset, config):
        return RecordSplits(*read_prepared(dataset, config, languages, seed), info)
    if config.source == "stream":
        train = read_streamed(dataset, config, seed)
        validation = dataset.read_train(config, source, "validation")
    elif config.train_file:
        train, validation = held_out(dataset.read_file(config, train_file_path(config)))
    else:
        train = dataset.read_train(config, source, "train")
        validation = dataset.read_train(config, source, "validation")
    cap = config.max_eval_examples
    tests = {lang: dataset.read_eval(config, lang, config.eval_split)[:cap] for lang in languages}
    if not isinstance(train, TrainRows):
        train = subsample(train, config, seed)
    return RecordSplits(train, validation[:cap], tests, info)


def subsample(records: list[Record], config: DataConfig, seed: int) -> list[Record]:
    """`max_train_examples` records: the first ones, or (`subsample: random`) a subset drawn
    with `seed`, kept in file order."""
    return [records[i] for i in training_rows(len(records), config, seed)]
