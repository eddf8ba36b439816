"""Training from prepared TFDS datasets (`data.source: tfds`) or from JSONL files of any size
(`data.source: stream`): records are read by random access (from the array_record files, or
by line offsets) and tokenised batch by batch, inside grain's worker processes when
`data.worker_count` > 0, so host memory does not grow with the dataset.

Before step 0 one pass over the training split (in chunks) tokenises every example to learn
its length: the split's padded length and the per-example lengths (4 bytes each) that length
buckets and length grouping need, so every batch equals the batch the in-memory path builds
from the same records (same order, same padding). The lengths are saved beside the prepared
dataset, keyed by everything they depend on, so later runs skip the pass. Evaluation splits
are small and read whole. A dataset opts in by naming its builder (`Dataset.prepared`) and
converting a prepared example back into its record (`Dataset.from_prepared`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxcult.config import DataConfig
from jaxcult.data.batching import (
    LengthBuckets,
    Split,
    cut_to_bucket,
    pad_arrays,
    pad_token_id,
)
from jaxcult.data.registry import Dataset, Record
from jaxcult.errors import UserError

log = logging.getLogger(__name__)

INDEX_CHUNK = 4096  # examples tokenised at a time by the length pass
INDEX_FORMAT = "2"  # part of the index key: indexes of another layout are rebuilt
PROGRESS_SECONDS = 10.0


class IndexProgress:
    """A line on stderr at most every `PROGRESS_SECONDS` (and at the end) while the length pass
    runs: on millions of examples it takes minutes before the first step."""

    def __init__(self, where: str, total: int) -> None:
        self.where, self.total = where, total
        self.start = self.last = time.perf_counter()

    def done(self, examples: int) -> None:
        now = time.perf_counter()
        if now - self.last >= PROGRESS_SECONDS or examples == self.total:
            if examples < self.total or now - self.start >= PROGRESS_SECONDS:
                log.info(f"indexing {self.where}: {examples:,}/{self.total:,} examples "
                      f"({now - self.start:.0f} s)")
            self.last = now


def data_dir(config: DataConfig) -> Path:
    from jaxcult.data.tfds import DEFAULT_DATA_DIR

    return Path(config.data_dir).expanduser() if config.data_dir else DEFAULT_DATA_DIR


def uses_prepared(dataset: Dataset, config: DataConfig) -> bool:
    """`data.source`: `tfds`, `files` / `stream` (local files), or `auto` (tfds when
    `data.data_dir` holds the dataset prepared, else files)."""
    if config.source in ("files", "stream"):
        return False
    if dataset.prepared is None:
        if config.source == "tfds":
            raise UserError(f"data.source: {dataset.name} has no prepared (TFDS) form; use "
                            f"data.source=files")
        return False
    if config.train_file and config.source == "tfds":
        raise UserError("data.train_file: a local file is read with data.source=files, not tfds")
    if config.source == "auto" and (config.data_dir is None or config.train_file):
        return False
    from jaxcult.data import tfds as jt

    prepared = jt.builder(dataset.prepared, data_dir=data_dir(config)).is_prepared()
    if not prepared and config.source == "tfds":
        raise UserError(f"data.source: {dataset.prepared} is not prepared under "
                        f"{data_dir(config)}; run `jaxcult data prepare {dataset.prepared} "
                        f"--manual-dir DIR --data-dir {data_dir(config)}` first")
    return prepared


class PreparedRecords:
    """One split of a prepared dataset as the dataset's records, by index. It reads the
    split's array_record shards with its own single-threaded readers (TFDS' data source starts
    a thread pool per read, whose allocator arenas grew the process by hundreds of MB over 2M
    examples). Picklable: a grain worker process reopens the files on first use."""

    def __init__(self, dataset: Dataset, config: DataConfig, language: str, split: str,
                 evaluation: bool = False) -> None:
        from jaxcult.data import tfds as jt

        self.dataset, self.config = dataset, config
        self.split = dataset.prepared_split(language, split, evaluation)
        self.where = f"{dataset.prepared}[{self.split}] under {data_dir(config)}"
        self.fingerprint = self.where  # prepared files are written once per version
        builder = jt.prepared_builder(dataset.prepared, data_dir=data_dir(config))
        if self.split not in builder.info.splits:
            raise UserError(f"{dataset.prepared} under {data_dir(config)}: no split "
                            f"{self.split!r} (prepared: {', '.join(sorted(builder.info.splits))})")
        info = builder.info.splits[self.split]
        self._files = [str(path) for path in info.filepaths]
        self._starts = np.cumsum([0, *info.shard_lengths])
        self._folder = Path(builder.data_dir)
        self._features = builder.info.features
        self._readers: list | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": None}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def index_dir(self) -> Path:
        """Where length indexes of this prepared dataset are kept (inside its version folder)."""
        return self._folder / "jaxcult-index"

    def records(self, indices: np.ndarray) -> list[Record]:
        from array_record.python.array_record_module import ArrayRecordReader

        if self._readers is None:
            self._readers = [ArrayRecordReader(f, "readahead_buffer_size:0") for f in self._files]
        indices = np.asarray(indices, np.int64)
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        raw: list = [None] * len(indices)
        for shard in np.unique(shards):
            chosen = np.flatnonzero(shards == shard)
            found = self._readers[shard].read([int(i) for i in indices[chosen] - self._starts[shard]])
            for position, record in zip(chosen, found):
                raw[position] = record
        return [self.dataset.from_prepared(self._features.deserialize_example_np(record), self.config)
                for record in raw]


class JsonlLines:
    """The records of JSONL training files (one file, or shards read in name order) by line:
    random access through an index of line starts (12 bytes a record), built by one scan of
    the bytes. Picklable: a grain worker reopens the files."""

    def __init__(self, paths: list[Path], check: Callable[[Any, str], Record],
                 config: DataConfig) -> None:
        self.paths, self.check, self.config = paths, check, config
        self.where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent}/({len(paths)} shards)"
        files, starts, numbers = [], [], []
        for file, path in enumerate(paths):
            with open(path, "rb") as handle:
                position = 0
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        files.append(file)
                        starts.append(position)
                        numbers.append(number)
                    position += len(line)
        if not starts:
            raise UserError(f"{self.where}: no records")
        stats = [path.stat() for path in paths]
        self.fingerprint = json.dumps([[str(p), st.st_size, st.st_mtime_ns]
                                       for p, st in zip(paths, stats)])
        self.file = np.asarray(files, np.int16)
        self.start = np.asarray(starts, np.int64)
        # a record's bytes run to the next record of its file (blank lines are whitespace)
        sizes = np.asarray([st.st_size for st in stats], np.int64)
        last = np.r_[self.file[1:] != self.file[:-1], True]
        self.end = np.where(last, sizes[self.file], np.r_[self.start[1:], 0])
        self.number = np.asarray(numbers, np.int32)
        self._descriptors: dict[int, int] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_descriptors": {}}

    def __del__(self) -> None:
        for descriptor in getattr(self, "_descriptors", {}).values():
            os.close(descriptor)

    def __len__(self) -> int:
        return len(self.start)

    def index_dir(self) -> Path:
        return self.paths[0].parent / ".jaxcult-index"

    def records(self, indices: np.ndarray) -> list[Record]:
        found = []
        for i in indices:
            file = int(self.file[i])
            descriptor = self._descriptors.get(file)
            if descriptor is None:  # kept open; pread is safe from grain's reader threads
                descriptor = self._descriptors[file] = os.open(self.paths[file], os.O_RDONLY)
            line = os.pread(descriptor, int(self.end[i] - self.start[i]), int(self.start[i]))
            where = f"{self.paths[file]}:{int(self.number[i])}"
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise UserError(f"{where}: not UTF-8 text ({error.reason})") from None
            except json.JSONDecodeError as error:
                raise UserError(f"{where}: invalid JSON ({error.msg})") from None
            found.append(self.check(record, where))
        return found


@dataclass
class TrainRows:
    """The training examples of a prepared dataset: which rows of which split (not read yet)."""

    source: PreparedRecords | JsonlLines
    rows: np.ndarray


def read_prepared(dataset: Dataset, config: DataConfig, languages: list[str], seed: int
                  ) -> tuple[TrainRows, list[Record], dict[str, list[Record]]]:
    """(training rows, validation records, test records per language) of a prepared dataset;
    the evaluation splits are read whole (capped by `max_eval_examples`)."""
    def whole(language: str, split: str, evaluation: bool) -> list[Record]:
        source = PreparedRecords(dataset, config, language, split, evaluation)
        count = min(len(source), config.max_eval_examples or len(source))
        return source.records(np.arange(count))

    source = config.source_language
    train = PreparedRecords(dataset, config, source, "train")
    rows = training_rows(len(train), config, seed)
    tests = {lang: whole(lang, config.eval_split, True) for lang in languages}
    return TrainRows(train, rows), whole(source, "validation", False), tests


def read_streamed(dataset: Dataset, config: DataConfig, seed: int) -> TrainRows:
    """`data.source: stream`: the training split's JSONL lines, read when batches need them."""
    if config.train_file:
        raise UserError("data.train_file: data.source=stream reads the dataset's own training "
                        "files (train.jsonl or train-*.jsonl shards); use data.source=files")
    paths, check = dataset.training_lines(config)
    lines = JsonlLines(paths, check, config)
    return TrainRows(lines, training_rows(len(lines), config, seed))


def training_rows(count: int, config: DataConfig, seed: int) -> np.ndarray:
    """`data.max_train_examples` row indices (first, or a seeded random subset in order), as
    `jaxcult.data.splits.subsample` picks records."""
    limit = config.max_train_examples
    if limit is None or limit >= count or config.subsample == "first":
        return np.arange(min(count, limit or count))
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _windows(split: Split) -> np.ndarray:
    """For each row of a tokenised batch, the batch record it came from (QA: its doc-stride
    windows share a record; other tasks: one row per record)."""
    if split.meta is not None and "example" in split.meta:
        return np.asarray(split.meta["example"])
    return np.arange(len(split))


class StreamedSplit:
    """A training split tokenised batch by batch from prepared records: the `Split` interface
    the batch iterators read (`len`, `take`, `lengths`, `padded_length`, `buckets`). Its rows
    are the task's rows: a record may give several (QA windows), found by (record, window)."""

    meta = None

    def __init__(self, source: PreparedRecords | JsonlLines, rows: np.ndarray, task, tokenizer,
                 max_length: int, name: str, language: str) -> None:
        self.source, self.rows, self.task, self.tokenizer = source, rows, task, tokenizer
        self.max_length, self.name, self.language = max_length, name, language
        self.pad_id = pad_token_id(tokenizer)
        self.buckets: LengthBuckets | None = None
        if not len(rows):
            raise UserError(f"{source.where}: split is empty")
        if not task.streamable:
            raise UserError(f"data.source=tfds: task {task.name!r} cannot be tokenised batch by "
                            f"batch (it draws randomness over the whole split, or packs it); "
                            f"use data.source=files")
        index = self._index()
        self.lengths, self.record_of, self.window_of = (index["lengths"], index["record"],
                                                        index["window"])
        self._keys = tuple(str(k) for k in index["sequence_keys"])
        self.padded_length = int(index["padded_length"])
        self.prediction_width = int(index["prediction_width"])

    def _index_key(self) -> str:
        """What the index depends on: the examples, how records are built and tokenised."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else str(len(self.tokenizer))
        parts = [INDEX_FORMAT, self.source.fingerprint,
                 json.dumps(self.source.config.own_settings(DataConfig), sort_keys=True),
                 json.dumps(self.task.settings.model_dump(exclude={"evaluators"}),
                            sort_keys=True, default=str),
                 str(self.max_length), hashlib.sha1(vocabulary.encode()).hexdigest(),
                 hashlib.sha1(self.rows.tobytes()).hexdigest()]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:20]

    def _index(self) -> dict[str, np.ndarray]:
        """Every row's token length, record (position in `rows`) and window, and the split's
        padded widths and sequence keys: from the index an earlier run with the same examples,
        task and tokenizer wrote, else one chunked pass, reporting progress on stderr (then
        saved when the folder is writable: a prepared dataset is indexed once)."""
        path = self.source.index_dir() / f"{self._index_key()}.npz"
        if path.is_file():
            with np.load(path) as saved:
                return dict(saved)
        parts = {"lengths": [], "record": [], "window": []}
        width, padded, predicted = 0, 0, self.task.prediction_keys
        progress = IndexProgress(self.source.where, len(self.rows))
        for start in range(0, len(self.rows), INDEX_CHUNK):
            split = self._tokenize(np.arange(start, min(start + INDEX_CHUNK, len(self.rows))))
            keys = self.task.sequence_keys or split.sequence_keys()
            padded = max(padded, split.padded_length)
            width = max(width, split.arrays[predicted[0]].shape[-1] if predicted else 0)
            record = _windows(split)
            firsts = np.searchsorted(record, record)  # each row's record's first row
            parts["lengths"].append(split.lengths.astype(np.int32))
            parts["record"].append((record + start).astype(np.int32))
            parts["window"].append((np.arange(len(record)) - firsts).astype(np.int32))
            progress.done(min(start + INDEX_CHUNK, len(self.rows)))
        index = {**{k: np.concatenate(v) for k, v in parts.items()},
                 "prediction_width": np.asarray(width), "padded_length": np.asarray(padded),
                 "sequence_keys": np.asarray(keys)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.npz")
            np.savez(partial, **index)
            partial.replace(path)
        except OSError:
            pass  # a read-only data_dir: index again next time
        return index

    def sequence_keys(self) -> tuple[str, ...]:
        return self._keys

    def use_buckets(self, buckets: LengthBuckets | None) -> None:
        """Length buckets, padding to the bucket that holds the split (as `pad_split`)."""
        self.buckets = buckets
        if buckets is not None:
            self.padded_length = buckets.holding(self.padded_length)

    def _tokenize(self, positions: np.ndarray) -> Split:
        records = self.source.records(self.rows[positions])
        try:
            return self.task.tokenize(records, self.tokenizer, self.max_length, self.name)
        except UserError as error:
            raise UserError(f"{self.source.where}, rows {int(self.rows[positions[0]])}-"
                            f"{int(self.rows[positions[-1]])}: {error}") from None

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, index: np.ndarray, longest_of: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Rows `index` tokenised and padded as the in-memory split pads them (see `Split.take`):
        their records are tokenised once each, then each row picks its window."""
        index = np.asarray(index)
        records, first = np.unique(self.record_of[index], return_index=True)
        records = records[np.argsort(first)]            # in order of first use
        split = self._tokenize(records)
        starts = np.searchsorted(_windows(split), np.arange(len(records)))
        slot = {int(r): i for i, r in enumerate(records)}
        picked = starts[[slot[int(r)] for r in self.record_of[index]]] + self.window_of[index]
        arrays = pad_arrays({k: v[picked] for k, v in split.arrays.items()}, self.padded_length,
                            self._keys, self.pad_id)
        # per-position arrays (masked LM's predictions) at the split's width, as `pad_columns`
        arrays = pad_arrays(arrays, self.prediction_width, self.task.prediction_keys, 0)
        return cut_to_bucket(arrays, self.buckets, self.lengths[index if longest_of is None
                                                                else longest_of],
                             self.padded_length)
