"""The in-memory batch iterator: resumable state and per-process sharding of global batches."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcult.data.batching import BatchIterator, Split
from jaxcult.errors import UserError


def split(n: int = 50) -> Split:
    return Split({"input_ids": np.arange(n)[:, None].repeat(3, 1), "labels": np.arange(n)}, "toy")


def take(iterator: BatchIterator, count: int) -> list[np.ndarray]:
    return [next(iterator)["labels"] for _ in range(count)]


def test_restored_state_yields_the_same_next_batches():
    first = BatchIterator(split(), 8, seed=3)
    take(first, 9)  # crosses an epoch boundary (6 batches per epoch)
    state = first.state()
    expected = take(first, 10)
    resumed = BatchIterator(split(), 8, seed=3)
    resumed.restore(state)
    for a, b in zip(take(resumed, 10), expected):
        np.testing.assert_array_equal(a, b)


def test_two_processes_split_each_global_batch_disjointly():
    single = take(BatchIterator(split(), 8, seed=1), 12)  # two epochs
    shards = [take(BatchIterator(split(), 8, seed=1, process_index=i, process_count=2), 12)
              for i in range(2)]
    for step, whole in enumerate(single):
        a, b = shards[0][step], shards[1][step]
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    epoch = np.concatenate(single[:6])
    assert len(set(epoch)) == 48  # an epoch never repeats an example


def test_batch_not_divisible_by_processes_is_an_error():
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        BatchIterator(split(), 8, seed=1, process_index=0, process_count=3)


def test_grain_pipeline_gives_the_batch_iterator_order_and_resumes():
    from jaxcult.data.pipeline import GrainBatches

    reference = take(BatchIterator(split(), 8, seed=3), 14)
    pipeline = GrainBatches(split(), 8, seed=3)
    for a, b in zip(take(pipeline, 14), reference):
        np.testing.assert_array_equal(a, b)
    state = pipeline.state()
    expected = take(pipeline, 5)
    resumed = GrainBatches(split(), 8, seed=3)
    resumed.restore(state)
    for a, b in zip(take(resumed, 5), expected):
        np.testing.assert_array_equal(a, b)
    for iterator in (pipeline, resumed):
        iterator.close()


def test_grain_pipeline_two_processes_and_worker_processes():
    from jaxcult.data.pipeline import GrainBatches

    single = take(GrainBatches(split(), 8, seed=1), 6)  # one epoch
    shards = [take(GrainBatches(split(), 8, seed=1, process_index=i, process_count=2), 6)
              for i in range(2)]
    epoch = np.concatenate(single)
    halves = [np.concatenate(s) for s in shards]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(np.concatenate(halves)) == sorted(epoch)
    workers = GrainBatches(split(), 8, seed=1, worker_count=2)
    try:
        for a, b in zip(take(workers, 6), single):
            np.testing.assert_array_equal(a, b)
        state = workers.state()
        json_state = __import__("json").loads(__import__("json").dumps(state))
        expected = take(workers, 3)
    finally:
        workers.close()
    again = GrainBatches(split(), 8, seed=1, worker_count=2)
    try:
        again.restore(json_state)
        for a, b in zip(take(again, 3), expected):
            np.testing.assert_array_equal(a, b)
    finally:
        again.close()
