"""Vectorised seeds (`trainer.vectorize_seeds`): the seeds of a multi-seed run train as one
vmapped program.

Each seed is a complete session — its own trainable parameters, optimizer state, schedule and
mask, Fisher tracker, data order, dropout keys, evaluation, checkpoints and `seed-<n>/`
directory — exactly as its separate run would build it. Only the train step is shared: every
step, each seed's before-step hooks run (its schedule may open groups), the seeds' train states
and batches are stacked on a leading seed axis and one `jax.vmap`ped step advances them all
(the frozen backbone is held once and broadcast; the truncated backward stops below the lowest
group any seed trains), then each seed's after-step hooks run on its
slice (logging, validation, tr(F), probes, checkpoints). So seed i's losses, masks, events and
scores are those of its separate run; batches of different padded lengths are padded to the
longest, which changes no result but rounding. Evaluation runs per seed, one after another.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult.config import RunConfig
from jaxcult.config_loading import dump_config
from jaxcult.data.batching import pad_arrays
from jaxcult.errors import UserError
from jaxcult.hub.madx import language_states
from jaxcult.run.build import Built, build_model, build_run
from jaxcult.run.single import (
    Session,
    SessionOutputs,
    interrupted,
    open_session,
    session_summary,
)
from jaxcult.rundir import RunDir, prepare, write_text_atomic
from jaxcult.sharding import activation_rules, make_mesh
from jaxcult.trainers.loop import StopSignal


def seed_builds(configs: list[RunConfig], mesh) -> list[Built]:
    """One `Built` per seed: the first seed's data and plug-ins for all, each seed's own
    initialised trainable parameters, and one frozen backbone shared by every seed (a random
    backbone, seeded per run, is each seed's own)."""
    first = build_run(configs[0], mesh)
    builts = [first]
    for config in configs[1:]:
        parts = build_model(config, first.plugins.task, first.tokenizer, mesh)
        if config.model.name != "random":
            parts = dataclasses.replace(parts, frozen=first.parts.frozen)
        builts.append(Built(first.plugins, first.data, parts, first.tokenizer))
    return builts


def stack(trees: list) -> object:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def stacked_batch(batches: list[dict], sequence_keys: tuple[str, ...], pad_id: int) -> dict:
    """The seeds' batches on a leading axis, padded to the longest of them."""
    if sequence_keys:
        length = max(b[sequence_keys[0]].shape[-1] for b in batches)
        batches = [pad_arrays(b, length, sequence_keys, pad_id) for b in batches]
    return {key: jnp.asarray(np.stack([b[key] for b in batches])) for key in batches[0]}


class SeedStep:
    """One jitted, vmapped train step for every seed: (states, frozen, batches) -> (states,
    metrics), each with a leading seed axis; the frozen backbone is shared unless it is each
    seed's own."""

    def __init__(self, sessions: list[Session], shared_frozen: bool) -> None:
        self.sessions = sessions
        step = sessions[0].program._train_step
        self.step = jax.jit(jax.vmap(step, in_axes=(0, None if shared_frozen else 0, 0, None)))
        self.frozen = (sessions[0].loop.frozen if shared_frozen
                       else stack([s.loop.frozen for s in sessions]))
        train = sessions[0].built.data.train  # length buckets: the seeds' batches may differ
        self.sequence_keys = train.buckets.keys if train.buckets is not None else ()
        self.pad_id = sessions[0].built.tokenizer.pad_token_id or 0

    def __call__(self) -> None:
        """Advance every seed's loop by one step (its hooks are the caller's)."""
        loops = [s.loop for s in self.sessions]
        batch = stacked_batch([next(loop.batches) for loop in loops], self.sequence_keys,
                              self.pad_id)
        states = stack([loop.state for loop in loops])
        # one truncation level for all seeds (a per-seed level would make XLA run every branch)
        backward = jnp.any(states.mask | states.track[:, None], axis=0)
        states, metrics = self.step(states, self.frozen, batch, backward)
        for i, loop in enumerate(loops):
            loop.state = jax.tree.map(lambda x, i=i: x[i], states)
            loop.metrics = jax.tree.map(lambda x, i=i: x[i], metrics)


def train_vectorized(configs: dict[int, RunConfig], runs: dict[int, RunDir],
                     started: dict[int, bool], resume: bool) -> dict[int, dict]:
    """Train the seeds of `configs` (seed -> its single-seed config) together, each in its run
    directory (`started`: it holds checkpoints; `resume` continues those, as `train_one`
    would); returns each seed's summary (a signal checkpoints every seed and raises
    `Interrupted`)."""
    seeds = list(configs)
    resuming = {seed: resume and started[seed] for seed in seeds}
    first = configs[seeds[0]]
    if first.mesh.distributed:
        raise UserError("trainer.vectorize_seeds: multi-process runs are not supported; train "
                        "the seeds one after another (vectorize_seeds: false)")
    mesh = make_mesh(first.mesh, jax.devices()[:1])
    if len(jax.devices()) > 1:
        print("note: trainer.vectorize_seeds runs on one device (the seed axis is not sharded)",
              flush=True)
    with jax.set_mesh(mesh), activation_rules(first.mesh.rules):
        builts = seed_builds([configs[s] for s in seeds], mesh)
        sessions = [open_session(configs[seeds[0]], builts[0], mesh)]
        sessions += [open_session(configs[s], built, mesh, sessions[0].program.model)
                     for s, built in zip(seeds[1:], builts[1:])]
        hubs = builts[0].parts.language_hubs
        per_language = [language_states(s.loop.frozen, hubs, list(builts[0].data.tests))
                        if hubs else {} for s in sessions]
        for seed in seeds:
            prepare(runs[seed], overwrite=not started[seed], resume=resuming[seed])
            if not resuming[seed]:
                write_text_atomic(runs[seed].config, dump_config(configs[seed]))
        outputs: list[SessionOutputs] = []
        try:
            for seed, session in zip(seeds, sessions):
                outputs.append(SessionOutputs(session, runs[seed], resume=resuming[seed]))
            starts = {seed: o.first for seed, o in zip(seeds, outputs)}
            if len(set(starts.values())) > 1:
                raise UserError(f"trainer.vectorize_seeds: the seeds' checkpoints are at different "
                                f"steps ({', '.join(f'seed {s}: {n}' for s, n in starts.items())}); "
                                f"resume them with trainer.vectorize_seeds=false")
            stopped = _run_together(sessions, outputs, next(iter(starts.values())),
                                    shared_frozen=first.model.name != "random")
        finally:
            for o in outputs:
                o.close()
        if stopped is not None:
            raise interrupted(RunDir(runs[seeds[0]].root.parent), *stopped)
        return {seed: session_summary(session, states, runs[seed])
                for seed, session, states in zip(seeds, sessions, per_language)}


def _run_together(sessions: list[Session], outputs: list[SessionOutputs], first: int, *,
                  shared_frozen: bool) -> tuple[int, int] | None:
    """The seeds' loops in lock-step; returns (step, signal) when a signal stopped them."""
    step_all = SeedStep(sessions, shared_frozen)
    loops = [s.loop for s in sessions]
    with StopSignal() as stop:
        stop.step = first
        for step in range(first, loops[0].steps):
            for loop in loops:
                loop.before_step(step)
            step_all()
            done = step + 1
            stop.step = done
            for loop in loops:
                loop.after_step(done)
            if stop.received is not None:
                for o in outputs:
                    o.checkpoint_now(done)
                return done, stop.received
    return None
