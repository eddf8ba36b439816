"""The training input pipeline on grain: seeded per-epoch shuffling, per-process sharding of
every global batch, batching, prefetch with optional worker processes, checkpointable state.

Global batch t holds the rows `EpochBatches.rows(t)` says (a seeded permutation per epoch, the
partial last batch dropped or kept), exactly the order of `BatchIterator`. Process k of P reads
its contiguous share of every global batch, so the processes' slices are disjoint and
concatenate to the one-process batch. The iterator's state is grain's (`next_index`, the number
of batches read), saved in checkpoints.
"""

from __future__ import annotations

import grain
import numpy as np

from jaxcult.data.batching import EpochBatches, Split, check_batches, shape_samples


class _Batch:
    """Picklable `batch index -> this process's rows` map (worker processes receive a copy)."""

    def __init__(self, split: Split, plan: EpochBatches) -> None:
        self.split, self.plan = split, plan

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return self.split.take(self.plan.rows(index), self.plan.global_rows(index))


class GrainBatches:
    """Local slices of global training batches, as an endless checkpointable grain iterator."""

    def __init__(self, split: Split, batch_size: int, seed: int, *, process_index: int = 0,
                 process_count: int = 1, worker_count: int = 0, prefetch: int = 2,
                 keep_remainder: bool = False, length_grouping: int = 0) -> None:
        check_batches(split, batch_size, process_count, keep_remainder)
        plan = EpochBatches(len(split), batch_size, seed, process_index=process_index,
                            process_count=process_count, keep_remainder=keep_remainder,
                            lengths=split.lengths if length_grouping else None,
                            window=length_grouping)
        self.split, self.plan, self.batches_per_epoch = split, plan, plan.per_epoch
        dataset = grain.MapDataset.range(1 << 62).map(_Batch(split, plan))
        options = grain.ReadOptions(num_threads=1 if worker_count else 2,
                                    prefetch_buffer_size=max(prefetch, 1))
        iterable = dataset.to_iter_dataset(options)
        if worker_count:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we have no argv
                flags.FLAGS.mark_as_parsed()
            iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
        self._iterator = iter(iterable)

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def __iter__(self) -> GrainBatches:
        return self

    def state(self) -> dict:
        return self._iterator.get_state()

    def shape_samples(self, first: int, count: int | None = None) -> list[dict[str, np.ndarray]]:
        """See `batching.shape_samples`: one batch of each shape among the `count` from `first`."""
        return shape_samples(self.split, self.plan, first, count)

    def restore(self, state: dict) -> None:
        self._iterator.set_state(state)

    def close(self) -> None:
        """Stop prefetch threads and worker processes."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
