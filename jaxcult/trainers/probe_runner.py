"""Runs the configured probes during training: each probe gets its own stream of fresh
training batches (training order untouched), the current parameters and the loss without
dropout, every `every` steps and at the end; values go to probes.jsonl and TensorBoard."""

from __future__ import annotations

import time

import jax

from jaxcult.config import RunConfig
from jaxcult.data.batching import BatchIterator, Split
from jaxcult.logging import MetricLogger
from jaxcult.probes import ProbeInput, resolve_probe
from jaxcult.sharding import host_inputs
from jaxcult.trainers.loop import TrainLoop
from jaxcult.trainers.program import ModelProgram


class ProbeRunner:
    def __init__(self, config: RunConfig, program: ModelProgram, frozen, train: Split) -> None:
        groups = program.groups
        self.settings = list(config.probes)
        self.probes = [resolve_probe(p.name)(p, groups) for p in self.settings]
        self.batches = [BatchIterator(train, p.batch_size or config.trainer.batch_size,
                                      seed=config.trainer.seed + 104729 + 17 * i)
                        for i, p in enumerate(self.settings)]
        task = program.task
        self.loss = jax.jit(lambda params, batch: task.loss(
            program.outputs(params, frozen, batch), batch)[0])
        self.key = jax.random.key(config.trainer.seed + 3)

    def hook(self, index: int, logger: MetricLogger):
        """The after-step hook of probe `index`."""
        probe, settings = self.probes[index], self.settings[index]

        def after(loop: TrainLoop, done: int) -> None:
            started = time.perf_counter()
            batches = [host_inputs(next(self.batches[index])) for _ in range(settings.batches)]
            key = jax.random.fold_in(jax.random.fold_in(self.key, index), done)
            values = probe.measure(ProbeInput(done, loop.state.params, self.loss, batches, key))
            if values:
                logger.log_probe(done, settings.name, values, time.perf_counter() - started)
        return after

    def state(self) -> list[dict]:
        return [b.state() for b in self.batches]

    def restore(self, state: list[dict] | None) -> None:
        for iterator, saved in zip(self.batches, state or []):
            iterator.restore(saved)
