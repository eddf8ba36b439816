"""Vectorised seeds (`trainer.vectorize_seeds`): the seeds of a multi-seed run train as one
vmapped program.

Each seed is a complete session — its own trainable parameters, optimizer state, schedule and
mask, Fisher tracker, data order, dropout keys, evaluation, checkpoints and `seed-<n>/`
directory — exactly as its separate run would build it. Only the train step is shared: every
step, each seed's before-step hooks run (its schedule may open groups), the seeds' train states
and batches are stacked on a leading seed axis and one `jax.vmap`ped step advances them all
(the frozen backbone is held once and broadcast; the truncated backward stops below the lowest
group any seed trains), then each seed's after-step hooks run on its
slice (logging, probes, checkpoints). Evaluation and tr(F) are vmapped too: validation scores
every seed's parameters in one program (each batch read once), so does the final scoring of
every language, and a tr(F) estimate computes every seed's (each on its own batches) batch by
batch in one program. So seed i's losses, masks, events and scores are those of its separate run;
batches of different padded lengths are padded to the longest, which changes no result but
rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config
from jaxcult.data.batching import pad_arrays, pad_token_id
from jaxcult.errors import UserError
from jaxcult.hub.madx import language_states
from jaxcult.run.build import Built, build_model, build_run
from jaxcult.run.single import (
    Session,
    SessionOutputs,
    interrupted,
    open_session,
    reused_validation,
    say_reused,
    session_summary,
)
from jaxcult.rundir import RunDir, prepare, write_text_atomic
from jaxcult.sharding import activation_rules, make_mesh
from jaxcult.trainers.evaluation import each_language, evaluate_seeds
from jaxcult.trainers.fisher_tracker import FisherTracker
from jaxcult.trainers.hooks import Scorer, Traces
from jaxcult.trainers.loop import StopSignal, TrainLoop
from jaxcult.trainers.program import stack_trees

log = logging.getLogger(__name__)


def seed_builds(configs: list[RunConfig], mesh) -> list[Built]:
    """One `Built` per seed: the first seed's data and plug-ins for all, each seed's own
    initialised trainable parameters, and one frozen backbone shared by every seed (a random
    backbone, seeded per run, is each seed's own)."""
    first = build_run(configs[0], mesh)
    first.score_splits_with_model(configs[0].trainer.eval_batch_size)  # shared by the seeds
    builts = [first]
    for config in configs[1:]:
        shared = first.parts if config.model.name != "random" else None  # weights read once
        parts = build_model(config, first.plugins.task, first.tokenizer, mesh, shared)
        builts.append(Built(first.plugins, first.data, parts, first.tokenizer))
    return builts


def stacked_batch(batches: list[dict], sequence_keys: tuple[str, ...], pad_id: int) -> dict:
    """The seeds' batches on a leading axis, padded to the longest of them."""
    if sequence_keys:
        length = max(b[sequence_keys[0]].shape[-1] for b in batches)
        batches = [pad_arrays(b, length, sequence_keys, pad_id) for b in batches]
    return {key: jnp.asarray(np.stack([b[key] for b in batches])) for key in batches[0]}


def seed_mesh(requested: int, seeds: int) -> Mesh | None:
    """The 1-D `seed` mesh the vectorised step splits its seed axis over (`mesh.seed` devices,
    -1: all, cut to the largest count that divides `seeds`); None for one device."""
    devices = jax.devices()
    wanted = len(devices) if requested == -1 else requested
    if wanted > len(devices):
        raise UserError(f"mesh.seed={requested}: only {len(devices)} devices are available")
    size = max(d for d in range(1, min(wanted, seeds) + 1) if seeds % d == 0)
    if size < wanted:
        log.warning(f"note: mesh.seed: the {seeds} seeds are split over {size} of the {wanted} "
                    f"devices (a count that divides them)")
    elif wanted == 1 and len(devices) > 1:
        log.warning(f"note: trainer.vectorize_seeds runs every seed on one device; mesh.seed=-1 "
                    f"splits them over the {len(devices)} available")
    if size == 1:
        return None
    return jax.make_mesh((size,), ("seed",), axis_types=(AxisType.Auto,), devices=devices[:size])


class SeedStep:
    """One jitted, vmapped train step for every seed: (states, frozen, batches) -> (states,
    metrics), each with a leading seed axis; the frozen backbone is shared unless it is each
    seed's own. With `seeds_mesh` the seed axis is split over its devices (the shared backbone
    replicated on each) and the new states come back to the seeds' own device for their hooks."""

    def __init__(self, sessions: list[Session], shared_frozen: bool,
                 seeds_mesh: Mesh | None = None) -> None:
        self.sessions, self.seeds_mesh = sessions, seeds_mesh
        step = sessions[0].program._train_step
        axes = (0, None if shared_frozen else 0, 0, None)
        frozen = (sessions[0].loop.frozen if shared_frozen
                  else stack_trees([s.loop.frozen for s in sessions]))
        self.frozen_here = frozen  # on the seeds' own device (their hooks' programs run there)
        if seeds_mesh is None:
            self.step = jax.jit(jax.vmap(step, in_axes=axes))
            self.frozen = frozen
        else:
            split = NamedSharding(seeds_mesh, PartitionSpec("seed"))
            whole = NamedSharding(seeds_mesh, PartitionSpec())
            self.split, self.home = split, sessions[0].loop.state.step.sharding
            on_seeds = whole if shared_frozen else split
            self.step = jax.jit(jax.vmap(step, in_axes=axes, spmd_axis_name="seed"),
                                in_shardings=(split, on_seeds, split, whole),
                                out_shardings=(split, split))
            self.frozen = jax.device_put(frozen, on_seeds)
        # one dispatch each way instead of one per array and seed (it adds up on accelerators)
        self.stack = jax.jit(lambda trees: stack_trees(trees))
        self.unstack = jax.jit(lambda tree: [jax.tree.map(lambda x, i=i: x[i], tree)
                                             for i in range(len(sessions))])
        train = sessions[0].built.data.train  # length buckets: the seeds' batches may differ
        self.sequence_keys = train.buckets.keys if train.buckets is not None else ()
        self.pad_id = pad_token_id(sessions[0].built.tokenizer)

    def __call__(self) -> None:
        """Advance every seed's loop by one step (its hooks are the caller's)."""
        loops = [s.loop for s in self.sessions]
        batch = stacked_batch([next(loop.batches) for loop in loops], self.sequence_keys,
                              self.pad_id)
        states = self.stack([loop.state for loop in loops])
        # one truncation level for all seeds (a per-seed level would make XLA run every branch)
        backward = jnp.any(states.mask | states.track[:, None], axis=0)
        if self.seeds_mesh is None:
            states, metrics = self.step(states, self.frozen, batch, backward)
        else:
            with jax.set_mesh(self.seeds_mesh):
                states, metrics = self.step(jax.device_put(states, self.split), self.frozen,
                                            jax.device_put(batch, self.split), backward)
            states, metrics = jax.device_put((states, metrics), self.home)
        for loop, (state, seed_metrics) in zip(loops, self.unstack((states, metrics))):
            loop.state, loop.metrics = state, seed_metrics


class SeedValidation:
    """Validation of every seed in one vmapped evaluation: at a validation step the first
    seed's hook scores all seeds' current parameters (every seed has finished the step, and
    no hook before validation changes parameters); the other seeds' hooks read their result."""

    def __init__(self, sessions: list[Session], shared_frozen: bool, step: SeedStep) -> None:
        self.sessions, self.shared_frozen, self.seed_step = sessions, shared_frozen, step
        self.step: int | None = None
        self.results: list = []

    def scorer(self, index: int) -> Scorer:
        def score(loop: TrainLoop, done: int):
            if self.step != done:
                first = self.sessions[0]
                self.results = evaluate_seeds(
                    first.program.model, self.seed_step.stack([s.loop.state.params
                                                               for s in self.sessions]),
                    self.seed_step.frozen_here, first.built.data.validation,
                    first.config.trainer.eval_batch_size, shared_frozen=self.shared_frozen)
                self.step = done
            return self.results[index]
        return score


class SeedFisher:
    """tr(F) of every seed in one vmapped program per batch. When the first seed's hooks ask
    for tr(F) at a step, every seed's estimate is computed, each from its own tracker's batches
    and keys, with the parameters all seeds hold before that step (before-step hooks change
    masks, never parameters); the others read theirs. A seed that does not ask at that step
    gets its tracker's batches back (`settle`), so its batch stream stays its separate run's."""

    def __init__(self, sessions: list[Session], shared_frozen: bool, step: SeedStep) -> None:
        self.sessions, self.seed_step = sessions, step
        self.trackers = [s.tracker for s in sessions]
        self.fn = sessions[0].program.model.seeds_fisher(self.trackers[0].estimator, shared_frozen)
        self.step: int | None = None
        self.results: list[dict[str, float]] = []
        self.saved: list[dict] = []
        self.unclaimed: set[int] = set()

    def traces(self, index: int) -> Traces:
        def traces(params, step: int) -> dict[str, float]:
            if self.step != step:
                self._compute(step)
            self.unclaimed.discard(index)
            return self.results[index]
        return traces

    def _compute(self, step: int) -> None:
        self.settle()
        self.saved = [t.batches.state() for t in self.trackers]
        draws = [t.draws(step) for t in self.trackers]
        params = self.seed_step.stack([s.loop.state.params for s in self.sessions])
        values: list[list] = [[] for _ in self.trackers]
        for i in range(len(draws[0])):
            batch = stacked_batch([d[i][0] for d in draws], self.seed_step.sequence_keys,
                                  self.seed_step.pad_id)
            keys = jnp.stack([d[i][1] for d in draws])
            for seed, value in enumerate(self.fn(params, self.seed_step.frozen_here, batch, keys)):
                values[seed].append(value)
        self.results = [t.reduce(v, d) for t, v, d in zip(self.trackers, values, draws)]
        self.step, self.unclaimed = step, set(range(len(self.trackers)))

    def settle(self) -> None:
        """After every seed's before-step hooks: return the batches of seeds that did not ask."""
        for seed in self.unclaimed:
            self.trackers[seed].batches.restore(self.saved[seed])
        self.step, self.unclaimed = None, set()


def final_scores_together(sessions: list[Session], per_language: list[dict], runs: list[RunDir],
                          step: SeedStep, shared_frozen: bool) -> list[dict[str, dict]]:
    """`single.final_scores` of every seed, each language scored for all seeds in one vmapped
    evaluation (the seeds validate at the same steps, so they reuse the same languages'
    validation metrics)."""
    reused = [reused_validation(s, languages) for s, languages in zip(sessions, per_language)]
    steps = ", ".join(str(s.best.step) for s in sessions)
    say_reused(reused[0], f"each seed's best step ({steps})")  # the same languages for every seed
    first = sessions[0]
    tests = first.built.data.tests
    todo = {lang: split for lang, split in tests.items() if lang not in reused[0]}

    params = step.stack([s.best.params for s in sessions])

    def backbone(language: str):
        """The seeds' frozen state for `language`: its own (a MAD-X language adapter) or the
        training one (already stacked by `step` when each seed has its own)."""
        if language not in per_language[0]:
            return step.frozen_here
        frozen = [languages[language] for languages in per_language]
        return frozen[0] if shared_frozen else step.stack(frozen)

    def score(language: str, split) -> list[dict]:
        return evaluate_seeds(first.program.model, params, backbone(language), split,
                              first.config.trainer.eval_batch_size,
                              [run.predictions / f"{language}.json" for run in runs],
                              shared_frozen=shared_frozen)

    scores = each_language(todo, score)
    return [{lang: reused[i][lang] if lang in reused[i] else scores[lang][i] for lang in tests}
            for i in range(len(sessions))]


def train_vectorized(configs: dict[int, RunConfig], runs: dict[int, RunDir],
                     started: dict[int, bool], resume: bool, seed_devices: int = 1,
                     before_writing: Callable[[], None] | None = None) -> dict[int, dict]:
    """Train the seeds of `configs` (seed -> its single-seed config) together, each in its run
    directory (`started`: it holds checkpoints; `resume` continues those, as `train_one`
    would), the seed axis split over `seed_devices` devices (`seed_mesh`); returns each seed's
    summary (a signal checkpoints every seed and raises `Interrupted`). `before_writing` runs
    once data and models have loaded, before anything is written."""
    seeds = list(configs)
    resuming = {seed: resume and started[seed] for seed in seeds}
    first = configs[seeds[0]]
    if first.mesh.distributed:
        raise UserError("trainer.vectorize_seeds: multi-process runs are not supported; train "
                        "the seeds one after another (vectorize_seeds: false)")
    mesh = make_mesh(first.mesh, jax.devices()[:1])  # each seed's own pieces: one device
    seeds_mesh = seed_mesh(seed_devices, len(seeds))
    with jax.set_mesh(mesh), activation_rules(first.mesh.rules):
        builts = seed_builds([configs[s] for s in seeds], mesh)
        sessions = [open_session(configs[seeds[0]], builts[0], mesh)]
        sessions += [open_session(configs[s], built, mesh, sessions[0].program.model)
                     for s, built in zip(seeds[1:], builts[1:])]
        hubs = builts[0].parts.language_hubs
        per_language = [language_states(s.loop.frozen, hubs, list(builts[0].data.tests))
                        if hubs else {} for s in sessions]
        if before_writing is not None:
            before_writing()
        for seed in seeds:
            prepare(runs[seed], overwrite=not started[seed], resume=resuming[seed])
            if not resuming[seed]:
                write_text_atomic(runs[seed].config, dump_config(configs[seed]))
        shared_frozen = first.model.name != "random"
        step_all = SeedStep(sessions, shared_frozen, seeds_mesh)
        validation = SeedValidation(sessions, shared_frozen, step_all)
        fisher = SeedFisher(sessions, shared_frozen, step_all)
        outputs: list[SessionOutputs] = []
        try:
            for index, (seed, session) in enumerate(zip(seeds, sessions)):
                traces = fisher.traces(index) if isinstance(session.tracker, FisherTracker) else None
                outputs.append(SessionOutputs(session, runs[seed], resume=resuming[seed],
                                              score=validation.scorer(index), traces=traces,
                                              echo=index == 0))
            starts = {seed: o.first for seed, o in zip(seeds, outputs)}
            if len(set(starts.values())) > 1:
                raise UserError(f"trainer.vectorize_seeds: the seeds' checkpoints are at different "
                                f"steps ({', '.join(f'seed {s}: {n}' for s, n in starts.items())}); "
                                f"resume them with trainer.vectorize_seeds=false")
            stopped = _run_together(sessions, outputs, next(iter(starts.values())), step_all,
                                    fisher)
        finally:
            for o in outputs:
                o.close()
        if stopped is not None:
            raise interrupted(RunDir(runs[seeds[0]].root.parent), *stopped)
        scores = final_scores_together(sessions, per_language, [runs[s] for s in seeds],
                                       step_all, shared_frozen)
        return {seed: session_summary(session, states, runs[seed], seed_scores)
                for seed, session, states, seed_scores in zip(seeds, sessions, per_language, scores)}


def _run_together(sessions: list[Session], outputs: list[SessionOutputs], first: int,
                  step_all: SeedStep, fisher: SeedFisher) -> tuple[int, int] | None:
    """The seeds' loops in lock-step; returns (step, signal) when a signal stopped them."""
    loops = [s.loop for s in sessions]
    with StopSignal() as stop:
        for step in range(first, loops[0].steps):
            done = stop.step = step + 1  # as in TrainLoop.run
            for loop in loops:
                loop.before_step(step)
            fisher.settle()
            step_all()
            for loop in loops:
                loop.after_step(done)
            if stop.received is not None:
                for o in outputs:
                    o.checkpoint_now(done)
                return done, stop.received
    return None
