"""Runs the configured probes during training: each probe gets its own stream of fresh
training batches (training order untouched), the current parameters and the loss without
dropout, every `every` steps and at the end; values go to probes.jsonl and TensorBoard.
Probes that compare languages also get fixed batches of the evaluation splits and the
encoder's per-layer outputs."""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.data.batching import BatchIterator, Split
from jaxcult.errors import UserError
from jaxcult.probes import ProbeInput, resolve_probe
from jaxcult.probes.measures import masked_mean
from jaxcult.sharding import host_inputs
from jaxcult.tracking import MetricLogger
from jaxcult.trainers.loop import TrainLoop
from jaxcult.trainers.program import ModelProgram


def encoder_representations(program: ModelProgram, frozen):
    """(params, batch) -> mean-pooled outputs of the embeddings and every encoder layer, each
    [rows, hidden]; multiple-choice inputs [batch, choices, len] count each choice as a row,
    and only the text is encoded (a vision-language model's visual tokens are left out)."""
    if program.task.backbone != "encoder":
        raise UserError(f"probes: comparing languages needs an encoder backbone; task "
                        f"{program.task.name!r} runs a {program.task.backbone}")

    def run(params: dict, batch: dict) -> list[jax.Array]:
        model = nnx.merge(program.graphdef, *params.values(), frozen)
        encoder = getattr(model, "encoder", model)
        length = batch["input_ids"].shape[-1]
        ids, mask = batch["input_ids"].reshape(-1, length), batch["attention_mask"].reshape(-1, length)
        types = batch.get("token_type_ids")
        x = encoder.embed(ids, None if types is None else types.reshape(-1, length))
        out = encoder.encode(x, mask, hidden_states=True)
        return [masked_mean(h, mask) for h in out.hidden_states]
    return jax.jit(run)


def language_batches(splits: dict[str, Split], languages: list[str], examples: int,
                     batch_size: int) -> dict[str, list[dict]]:
    """The first `examples` of each language's evaluation split, batched and placed on the
    devices once (every measurement reads the same batches); the splits must hold the same
    number of examples (parallel translations)."""
    sizes = {lang: len(splits[lang]) for lang in languages}
    if len(set(sizes.values())) > 1:
        raise UserError(f"probes: cka compares parallel evaluation splits, but they hold "
                        f"{', '.join(f'{k}: {v}' for k, v in sizes.items())} examples")
    rows = min(examples, *sizes.values())
    starts = range(0, rows, batch_size)
    return {lang: [host_inputs(splits[lang].take(np.arange(start, min(start + batch_size, rows))))
                   for start in starts] for lang in languages}


class ProbeRunner:
    def __init__(self, config: RunConfig, program: ModelProgram, frozen, train: Split,
                 evaluation: dict[str, Split] | None = None) -> None:
        groups = program.groups
        self.settings = list(config.probes)
        self.probes = [resolve_probe(p.name)(p, groups) for p in self.settings]
        self.source = config.data.source_language
        self.languages, self.representations = [{} for _ in self.probes], None
        for i, probe in enumerate(self.probes):
            if probe.reads_languages:
                wanted = probe.languages_wanted(list(evaluation or {}), self.source)
                self.languages[i] = language_batches(evaluation, wanted, probe.examples_wanted(),
                                                     config.trainer.eval_batch_size)
                self.representations = encoder_representations(program, frozen)
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
            draws = settings.batches if probe.min_batches else 0
            batches = [host_inputs(next(self.batches[index])) for _ in range(draws)]
            key = jax.random.fold_in(jax.random.fold_in(self.key, index), done)
            values = probe.measure(ProbeInput(done, loop.state.params, self.loss, batches, key,
                                              self.representations, self.languages[index],
                                              self.source))
            if values:
                logger.log_probe(done, settings.name, values, time.perf_counter() - started)
        return after

    def state(self) -> list[dict]:
        return [b.state() for b in self.batches]

    def restore(self, state: list[dict] | None) -> None:
        for iterator, saved in zip(self.batches, state or []):
            iterator.restore(saved)
