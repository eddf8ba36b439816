"""Batching concurrent requests onto the generation engine, on one worker thread.

Requests queue up while a batch decodes; when the batch ends, the oldest waiting request opens
the next batch and every waiting request with the same model and sampling settings joins it,
up to `generation.batch_size`. A new batch waits up to `gather_s` until as many requests wait
as the last batch held (the clients a batch answered usually ask again soon; a lone client
never waits). Requests join at the next batch, not the
next step: the engine decodes a batch in static shapes with one KV cache. A batch is padded to
the next power of two of rows, so a lone request decodes alone. Limits, stop strings and
logprobs are per request inside a batch; a request with a `seed` decodes alone, so its sample
depends only on its prompt and seed. Results go back through each job's `sink`, called on the
worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxcult.generation.engine import Completion, Generator
from jaxcult.generation.sampling import Sampling
from jaxcult.serving.protocol import MAX_TOP_LOGPROBS, Job

log = logging.getLogger(__name__)


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    completion: Completion


@dataclass
class Failed:
    message: str


Event = Delta | Done | Failed
Sink = Callable[[Event], None]


class TextStream:
    """New text of one row as tokens arrive: held back while it may still turn into a stop
    string, or while its last character is an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer, stop_ids: set[int], stops: list[str], limit: int) -> None:
        self.tokenizer, self.stop_ids, self.limit = tokenizer, stop_ids, limit
        self.stops, self.hold = stops, max((len(s) for s in stops), default=1) - 1
        self.sent = ""

    def update(self, tokens: np.ndarray, count: int) -> str:
        new = tokens[:min(count, self.limit)].tolist()
        end = next((i for i, t in enumerate(new) if t in self.stop_ids), None)
        text = self.tokenizer.decode(new if end is None else new[:end], skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stops if s in text), default=len(text))
        safe = text[:min(cut, len(text) - self.hold)].rstrip("\ufffd")
        return self._advance(safe)

    def finish(self, final: str) -> str:
        return self._advance(final)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


class Scheduler:
    """Runs jobs in batches on the engine of each served model (`models`: name -> (model,
    tokenizer)); `config` fixes the batch size, buckets, chunk and the cap on new tokens."""

    def __init__(self, models: dict, config, gather_s: float = 0.0) -> None:
        self.models, self.config, self.gather_s = models, config, gather_s
        self._generators: dict[tuple[str, Sampling], Generator] = {}
        self._waiting: deque[tuple[Job, Sink]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._batches = 0
        self.batch_sizes: list[int] = []   # jobs per batch run (for measurements)
        self._thread = threading.Thread(target=self._loop, name="jaxcult-scheduler", daemon=True)
        self._thread.start()

    def generator(self, model: str, sampling: Sampling) -> Generator:
        key = (model, sampling)
        if key not in self._generators:
            loaded, tokenizer = self.models[model]
            config = self.config.model_copy(update=dict(
                do_sample=sampling.do_sample, temperature=sampling.temperature,
                top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                repetition_penalty=sampling.repetition_penalty, stop_strings=[]))
            self._generators[key] = Generator(loaded, tokenizer, config, row_buckets=True)
        return self._generators[key]

    def submit(self, job: Job, sink: Sink) -> None:
        with self._wake:
            self._waiting.append((job, sink))
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=60)

    def _next_batch(self) -> list[tuple[Job, Sink]] | None:
        with self._wake:
            while not self._waiting and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            first = self._waiting[0][0]
            if first.seed is not None:
                return [self._waiting.popleft()]
            # the clients the last batch answered are likely asking again: wait (a little)
            # for as many as it had, so that a lone client never waits
            expected = min(self.batch_sizes[-1] if self.batch_sizes else 1,
                           self.config.batch_size)
            deadline = time.monotonic() + self.gather_s
            while (len(self._fellows(first)) < expected and not self._closed
                   and (left := deadline - time.monotonic()) > 0):
                self._wake.wait(left)
            batch = self._fellows(first)[:self.config.batch_size]
            for item in batch:
                self._waiting.remove(item)
            return batch

    def _fellows(self, first: Job) -> list[tuple[Job, Sink]]:
        """Waiting jobs that can share a batch with `first` (itself included), oldest first."""
        return [item for item in self._waiting
                if (item[0].model, item[0].sampling, item[0].seed) == (first.model,
                                                                      first.sampling, None)]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run(batch)
            except Exception as error:  # a failed batch answers its requests; the server lives
                log.exception("serve: a batch failed")
                for _, sink in batch:
                    sink(Failed(f"generation failed: {type(error).__name__}: {error}"))

    def _run(self, batch: list[tuple[Job, Sink]]) -> None:
        jobs = [job for job, _ in batch]
        generator = self.generator(jobs[0].model, jobs[0].sampling)
        wants = [j.top_logprobs for j in jobs if j.top_logprobs is not None]
        streams = {row: TextStream(generator.tokenizer, set(np.asarray(generator.stop_ids).tolist()),
                                   job.stops, job.limit)
                   for row, job in enumerate(jobs) if job.stream}

        def on_chunk(count: int, tokens: np.ndarray) -> None:
            for row, stream in streams.items():
                delta = stream.update(tokens[row], count)
                if delta:
                    batch[row][1](Delta(delta))

        self._batches += 1
        self.batch_sizes.append(len(jobs))
        completions = generator.run_batch(
            [j.ids for j in jobs], self._batches, on_chunk, limits=[j.limit for j in jobs],
            stop_strings=[j.stops for j in jobs],
            top_logprobs=MAX_TOP_LOGPROBS if wants else None, seed=jobs[0].seed)
        for row, ((job, sink), completion) in enumerate(zip(batch, completions)):
            if row in streams:
                delta = streams[row].finish(completion.text)
                if delta:
                    sink(Delta(delta))
            sink(Done(completion))
