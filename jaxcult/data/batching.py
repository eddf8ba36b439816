"""Tokenised in-memory splits and a resumable, seeded batch iterator.

Sequences are padded to one fixed length per split (the longest example, capped at
`max_length`), so the jitted step sees one shape and compiles once. With `LengthBuckets` each
batch is cut to the smallest of a few static lengths that holds its longest example instead
(one compilation per length used). The iterator's state is two integers (epoch, position):
saving and restoring them yields exactly the next batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from jaxcult.errors import UserError


@dataclass(frozen=True)
class LengthBuckets:
    """The static sequence lengths batches are cut to: the smallest of `sizes` that holds the
    batch's longest example, never more than the split's own padded length (always a bucket).

    `keys` name the arrays whose last axis is the sequence (the task's `sequence_keys`).
    Cutting removes padding only, so the examples and their results stay the same while the
    padded tokens (and the compute spent on them) go.
    """

    sizes: tuple[int, ...]
    keys: tuple[str, ...]

    def holding(self, length: int) -> int:
        """The smallest bucket that holds `length` tokens (`length` itself past the largest)."""
        return next((size for size in self.sizes if size >= length), length)

    def length_for(self, longest: int, padded: int) -> int:
        return next((size for size in self.sizes if longest <= size < padded), padded)

    def cut(self, arrays: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
        return {k: v[..., :length] if k in self.keys else v for k, v in arrays.items()}


def fitted_bucket_sizes(lengths: np.ndarray, count: int) -> tuple[int, ...]:
    """The at most `count` lengths that minimise the tokens computed when every row is padded
    to the smallest of them holding it (the largest is the longest row). Exact, by dynamic
    programming over the distinct lengths; with length grouping a batch's longest row is close
    to each of its rows, so this is close to the padding batches actually get."""
    values, counts = np.unique(np.asarray(lengths, np.int64), return_counts=True)
    if not len(values):
        return ()
    rows_up_to = np.concatenate([[0], np.cumsum(counts)])
    # cost[k, j]: least tokens for values[:j + 1] with k + 1 buckets, the last one values[j]
    cost = np.full((count, len(values)), np.inf)
    start = np.zeros((count, len(values)), np.int64)  # first value the last bucket holds
    cost[0] = values * rows_up_to[1:]
    for k in range(1, count):
        for j in range(len(values)):
            # the last bucket (values[j]) holds values[i..j]; the others hold values[:i]
            i = np.arange(1, j + 1)
            totals = cost[k - 1, i - 1] + values[j] * (rows_up_to[j + 1] - rows_up_to[i])
            best = int(np.argmin(totals)) if len(totals) else -1
            if best >= 0 and totals[best] < cost[k - 1, j]:
                cost[k, j], start[k, j] = totals[best], i[best]
            else:  # another bucket does not help
                cost[k, j], start[k, j] = cost[k - 1, j], start[k - 1, j]
    sizes, k, j = [], count - 1, len(values) - 1
    while j >= 0:
        while k > 0 and cost[k, j] == cost[k - 1, j] and start[k, j] == start[k - 1, j]:
            k -= 1
        sizes.append(int(values[j]))
        j, k = int(start[k, j]) - 1, k - 1
    return tuple(sorted(sizes))


@dataclass
class Split:
    """Columns of one tokenised split (input_ids, attention_mask, ..., labels), one row each."""

    arrays: dict[str, np.ndarray]
    name: str
    meta: dict | None = None  # host-side data evaluation needs (e.g. QA windows -> examples)
    language: str | None = None
    buckets: LengthBuckets | None = None  # None: every batch has the split's padded length

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def padded_length(self) -> int:
        return self.arrays["attention_mask"].shape[-1]

    def sequence_keys(self) -> tuple[str, ...]:
        """The arrays aligned with the tokens: those shaped exactly like the attention mask."""
        shape = self.arrays["attention_mask"].shape
        return tuple(k for k, v in self.arrays.items() if v.shape == shape)

    @cached_property
    def lengths(self) -> np.ndarray:
        """[rows] tokens up to each row's last attended position (the longest choice of a
        multiple-choice row); left padding counts as content, so it is never cut."""
        mask = self.arrays["attention_mask"].reshape(len(self), -1, self.padded_length) != 0
        last = np.where(mask.any(-1), self.padded_length - np.argmax(mask[..., ::-1], axis=-1), 0)
        return last.max(-1)

    def take(self, index: np.ndarray, longest_of: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Rows `index`, cut to the bucket of the longest row of `longest_of` (default: of
        `index`; several processes pass the whole global batch so that they agree)."""
        arrays = {k: v[index] for k, v in self.arrays.items()}
        if self.buckets is None:
            return arrays
        rows = index if longest_of is None else longest_of
        return cut_to_bucket(arrays, self.buckets, self.lengths[rows], self.padded_length)


def cut_to_bucket(arrays: dict[str, np.ndarray], buckets: LengthBuckets | None,
                  lengths: np.ndarray, padded: int) -> dict[str, np.ndarray]:
    """A batch cut to the bucket of its longest row (`lengths`: the rows that must agree)."""
    if buckets is None:
        return arrays
    longest = int(lengths.max()) if len(lengths) else padded
    return buckets.cut(arrays, buckets.length_for(longest, padded))


def same_examples(a: Split, b: Split) -> bool:
    """Whether two splits hold the same tokenised examples (and no host-side metadata)."""
    return (a.meta is None and b.meta is None and a.arrays.keys() == b.arrays.keys()
            and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays))


def pad_token_id(tokenizer) -> int:
    """The id sequences are padded with (0 for tokenizers without a pad token, e.g. Llama's)."""
    return tokenizer.pad_token_id or 0


def pad_arrays(arrays: dict[str, np.ndarray], length: int, keys: tuple[str, ...],
               pad_id: int) -> dict[str, np.ndarray]:
    """Arrays whose `keys` (the sequence arrays) are padded on the right to `length`: input ids
    with `pad_id`, the rest with 0."""
    return {k: np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, length - v.shape[-1])],
                      constant_values=pad_id if k == "input_ids" else 0)
            if k in keys and v.shape[-1] < length else v for k, v in arrays.items()}


def pad_split(split: Split, length: int, keys: tuple[str, ...], pad_id: int) -> Split:
    """`split` padded on the right to `length` (see `pad_arrays`)."""
    if length <= split.padded_length:
        return split
    return replace(split, arrays=pad_arrays(split.arrays, length, keys, pad_id))


def pad_columns(splits: list[Split], keys: tuple[str, ...]) -> list[Split]:
    """The splits with their `keys` arrays (aligned with predicted positions, not tokens)
    padded with 0 to their common width, so that they share one compiled evaluation step."""
    if not keys:
        return splits
    width = max(split.arrays[keys[0]].shape[-1] for split in splits)
    return [replace(split, arrays=pad_arrays(split.arrays, width, keys, 0)) for split in splits]


def pad_splits(splits: list[Split], keys: tuple[str, ...], pad_id: int) -> list[Split]:
    """The splits padded to their common (longest) length, so that they share one compiled
    evaluation step."""
    length = max(split.padded_length for split in splits)
    return [pad_split(split, length, keys, pad_id) for split in splits]


def tokenize_classification(examples: list[dict], tokenizer, max_length: int, name: str,
                            num_labels: int) -> Split:
    """`{"text", "label"}` (or sentence pairs: `{"text", "text_pair", "label"}`) examples."""
    if not examples:
        raise UserError(f"{name}: split is empty")
    texts, pairs = [], []
    paired = "text_pair" in examples[0]
    for i, ex in enumerate(examples):
        if not isinstance(ex.get("text"), str):
            raise UserError(f"{name}: record {i}: missing or non-text field 'text'")
        if paired and not isinstance(ex.get("text_pair"), str):
            raise UserError(f"{name}: record {i}: missing or non-text field 'text_pair'")
        if paired:
            pairs.append(ex["text_pair"])
        label = ex.get("label")
        if not isinstance(label, int) or not 0 <= label < num_labels:
            raise UserError(f"{name}: record {i}: label {label!r} out of range [0, {num_labels})")
        texts.append(ex["text"])
    enc = tokenizer(texts, pairs if paired else None, truncation=True, max_length=max_length,
                    padding="longest", return_tensors="np")
    types = enc.get("token_type_ids")
    arrays = {
        "input_ids": enc["input_ids"].astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
        "token_type_ids": (np.zeros_like(enc["input_ids"]) if types is None else types).astype(np.int32),
        "labels": np.asarray([ex["label"] for ex in examples], dtype=np.int32),
    }
    return Split(arrays, name)


def tokenize_multiple_choice(records: list[dict], tokenizer, max_length: int, name: str) -> Split:
    """`{"context", "choices", "label"}` records -> arrays [examples, choices, length] + labels.

    Each (context, choice) pair is one sequence (context first segment, choice second)."""
    if not records:
        raise UserError(f"{name}: split is empty")
    count = len(records[0]["choices"])
    for i, record in enumerate(records):
        if len(record["choices"]) != count:
            raise UserError(f"{name}: record {i}: {len(record['choices'])} choices, the first "
                            f"record has {count} (every item needs the same number)")
        if not 0 <= record["label"] < count:
            raise UserError(f"{name}: record {i}: label {record['label']!r} out of range [0, {count})")
    first = [r["context"] for r in records for _ in range(count)]
    second = [choice for r in records for choice in r["choices"]]
    enc = tokenizer(first, second, truncation=True, max_length=max_length, padding="longest",
                    return_tensors="np")
    shape = (len(records), count, -1)
    arrays = {k: enc[k].astype(np.int32).reshape(shape) for k in ("input_ids", "attention_mask")}
    types = enc.get("token_type_ids")
    arrays["token_type_ids"] = (np.zeros_like(arrays["input_ids"]) if types is None
                                else types.astype(np.int32).reshape(shape))
    arrays["labels"] = np.asarray([r["label"] for r in records], dtype=np.int32)
    return Split(arrays, name)


def check_batches(split: Split, batch_size: int, process_count: int,
                  keep_remainder: bool = False) -> None:
    """A split must fill one global batch, and every global batch must split evenly over
    processes (with `keep_remainder`, the partial last one too)."""
    if len(split) < batch_size:
        raise UserError(f"{split.name}: {len(split)} examples, fewer than one batch of {batch_size}")
    if batch_size % process_count:
        raise UserError(f"trainer.batch_size: {batch_size} is not divisible by the "
                        f"{process_count} processes that load it")
    remainder = len(split) % batch_size
    if keep_remainder and remainder % process_count:
        raise UserError(f"data.drop_remainder: the partial batch of {split.name} ({remainder} "
                        f"examples) does not split over {process_count} processes")


class EpochBatches:
    """Which rows make global batch t: epoch t // per_epoch of a seeded permutation per epoch,
    every batch `batch_size` rows (the epoch's last one smaller with `keep_remainder`); each
    process takes its contiguous share of every batch. A pure function of t, so iterators over
    it checkpoint as one integer and worker processes need no shared state."""

    def __init__(self, size: int, batch_size: int, seed: int, *, process_index: int = 0,
                 process_count: int = 1, keep_remainder: bool = False,
                 lengths: np.ndarray | None = None, window: int = 0) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.full = size // batch_size
        self.per_epoch = self.full + (keep_remainder and size % batch_size > 0)
        if window and lengths is None:
            raise ValueError("grouping by length needs the examples' lengths")
        self.lengths, self.window = lengths, window
        self._cache: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        cached = self._cache  # read once: loader threads may replace it meanwhile
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.size)
            if self.window:
                order = self._grouped(order, rng)
            cached = self._cache = (epoch, order)
        return cached[1]

    def _grouped(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Within windows of `window` batches, sort by length and shuffle the batches; the
        epoch's leftover rows (the partial batch) stay a random draw, not the longest ones."""
        span, size = self.window * self.batch_size, self.batch_size
        head, tail = order[:self.full * size], order[self.full * size:]
        grouped = []
        for start in range(0, len(head), span):
            chunk = head[start:start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")].reshape(-1, size)
            grouped.append(chunk[rng.permutation(len(chunk))].ravel())
        return np.concatenate([*grouped, tail])

    def global_rows(self, t: int) -> np.ndarray:
        """Every process's rows of global batch t."""
        epoch, position = divmod(int(t), self.per_epoch)
        return self.permutation(epoch)[position * self.batch_size:(position + 1) * self.batch_size]

    def rows(self, t: int) -> np.ndarray:
        """This process's contiguous share of global batch t."""
        batch = self.global_rows(t)
        share = len(batch) // self.process_count
        return batch[self.process_index * share:(self.process_index + 1) * share]


def shape_samples(split: Split, plan: EpochBatches, first: int, count: int | None = None
                  ) -> list[dict[str, np.ndarray]]:
    """This process's batch of each distinct shape among global batches `first` ..
    `first + count - 1` (at most an epoch's worth: later epochs bring the same lengths); what
    the train step will be compiled for. The lengths decide, so only the samples are read."""
    samples: dict[tuple[int, int], int] = {}
    count = plan.per_epoch if count is None else min(count, plan.per_epoch)
    for t in range(first, first + count):
        rows = plan.global_rows(t)
        length = split.padded_length
        if split.buckets is not None:
            length = split.buckets.length_for(int(split.lengths[rows].max()), length)
        samples.setdefault((len(rows), length), t)
    return [split.take(plan.rows(t), plan.global_rows(t)) for t in samples.values()]


class BatchIterator:
    """Shuffled epochs of global batches (`EpochBatches`): the last partial batch is dropped,
    or kept with `keep_remainder`.

    With several processes (hosts), every process computes the same global permutation and
    yields only its contiguous slice of each global batch, so the processes' slices are
    disjoint and together form the one-process batch.
    """

    def __init__(self, split: Split, batch_size: int, seed: int, *, process_index: int = 0,
                 process_count: int = 1, keep_remainder: bool = False,
                 length_grouping: int = 0) -> None:
        check_batches(split, batch_size, process_count, keep_remainder)
        self.split = split
        self.plan = EpochBatches(len(split), batch_size, seed, process_index=process_index,
                                 process_count=process_count, keep_remainder=keep_remainder,
                                 lengths=split.lengths if length_grouping else None,
                                 window=length_grouping)
        self.epoch, self.position = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.plan.per_epoch

    def __next__(self) -> dict[str, np.ndarray]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        t = self.epoch * self.batches_per_epoch + self.position
        self.position += 1
        return self.split.take(self.plan.rows(t), self.plan.global_rows(t))

    def __iter__(self) -> BatchIterator:
        return self

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def shape_samples(self, first: int, count: int | None = None) -> list[dict[str, np.ndarray]]:
        """See `shape_samples`: one batch of each shape among the `count` from batch `first`."""
        return shape_samples(self.split, self.plan, first, count)

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def close(self) -> None:
        """Nothing to release (same interface as the grain pipeline)."""


EVAL_ROW_MULTIPLE = 8  # evaluation batch rows are a multiple of this: few compiled shapes


def eval_rows(examples: int, batch_size: int) -> int:
    """Rows per evaluation batch: as many batches as `batch_size` needs, the examples spread
    evenly over them (rounded up to `EVAL_ROW_MULTIPLE`), so that the last batch is not
    mostly padding rows (100 examples at 64: two batches of 56 rows, not 64 + 64)."""
    batches = max(1, -(-examples // batch_size))
    spread = -(-max(examples, 1) // batches)
    return min(batch_size, -(-spread // EVAL_ROW_MULTIPLE) * EVAL_ROW_MULTIPLE)


def longest_first(split: Split) -> np.ndarray:
    """The split's rows longest first (stable): the order length-bucketed evaluation takes."""
    return np.argsort(-split.lengths, kind="stable")


def eval_batch_lengths(split: Split, batch_size: int) -> np.ndarray:
    """[rows computed] for each row of `eval_batches`' length-bucketed batches (padding rows
    included), the longest example of its batch: the lengths that evaluation's buckets are
    fitted to, since a batch is cut to its longest example, not to each row's."""
    rows = eval_rows(len(split), batch_size)
    return np.repeat(split.lengths[longest_first(split)][::rows], rows)


def eval_batches(split: Split, batch_size: int
                 ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Every example once, as (batch, valid, examples): `examples` are the split's rows that
    the batch's valid rows hold, in that order; the last batch is padded (with copies of its
    first row) and `valid` marks its real rows. With length buckets the examples go longest
    first, so each batch holds examples of similar length and is cut to the bucket they need
    (in split order, one long example puts its whole batch in the longest bucket)."""
    n = len(split)
    rows = eval_rows(n, batch_size)
    order = longest_first(split) if split.buckets is not None else np.arange(n)
    for start in range(0, n, rows):
        examples = order[start:start + rows]
        valid = np.arange(rows) < len(examples)
        index = np.concatenate([examples, np.full(rows - len(examples), examples[0])])
        yield split.take(index, examples), valid, examples
