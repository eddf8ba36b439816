"""The training input pipeline on grain: seeded per-epoch shuffling, per-process sharding of
every global batch, batching, prefetch with optional worker processes, checkpointable state.

Element p of the global stream is example `permutation(seed, epoch)[p mod (steps * B)]` with
`epoch = p // (steps * B)` and `steps = n // B` (the last partial batch of an epoch is dropped),
exactly the order of `BatchIterator`. Process k of P reads, for every global batch t, positions
t*B + k*B/P ... t*B + (k+1)*B/P - 1, so the processes' slices are disjoint and concatenate to
the one-process batch. The iterator's state is grain's (`next_index`), saved in checkpoints.
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from jaxcult.data.batching import Split, check_batches


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class _Rows:
    """Picklable `global position -> row` map (worker processes receive a copy)."""

    def __init__(self, split: Split, batch_size: int, local_size: int, offset: int, seed: int):
        self.arrays, self.seed, self.n = split.arrays, seed, len(split)
        self.batch_size, self.local_size, self.offset = batch_size, local_size, offset
        self.per_epoch = (self.n // batch_size) * batch_size

    def __call__(self, local_index: int) -> dict[str, np.ndarray]:
        step, j = divmod(int(local_index), self.local_size)
        position = step * self.batch_size + self.offset + j
        epoch, within = divmod(position, self.per_epoch)
        row = _permutation(self.seed, epoch, self.n)[within]
        return {k: v[row] for k, v in self.arrays.items()}


def _stack(rows) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class GrainBatches:
    """Local slices of global training batches, as an endless checkpointable grain iterator."""

    def __init__(self, split: Split, batch_size: int, seed: int, *, process_index: int = 0,
                 process_count: int = 1, worker_count: int = 0, prefetch: int = 2) -> None:
        check_batches(split, batch_size, process_count)
        local = batch_size // process_count
        self.batches_per_epoch = len(split) // batch_size
        rows = _Rows(split, batch_size, local, process_index * local, seed)
        dataset = (grain.MapDataset.range(1 << 62).map(rows)
                   .batch(local, drop_remainder=True, batch_fn=_stack))
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

    def restore(self, state: dict) -> None:
        self._iterator.set_state(state)

    def close(self) -> None:
        """Stop prefetch threads and worker processes."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
