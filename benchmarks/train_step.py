"""Train-step speed of jaxcult vs PyTorch + AdapterHub `adapters` (the paper's stack), the cost of
one FUN check (jaxcult's pure function vs the official deep copy + N batches), and the overhead
of per-step Fisher tracking.

    python benchmarks/train_step.py [--batch 32] [--length 64] [--steps 10] [--rounds 2]

The PyTorch side runs in its own virtual environment (`benchmarks/.venv-adapters`, created on
first use: `adapters` pins transformers 4.57). Rounds alternate between the two stacks so machine
noise hits both; read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult.config_loading import load_config
from jaxcult.hub.export import save_pretrained
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.run.build import build_run
from jaxcult.sharding import make_mesh
from jaxcult.trainers.fisher_tracker import FisherTracker
from jaxcult.trainers.optim import lr_schedule, masked_optimizer
from jaxcult.trainers.program import StepOptions, TrainProgram, init_state

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from adapters_env import adapters_python  # noqa: E402


def jaxcult_side(args, fisher_batches: int):
    config = load_config(None, ["model.name=multilingual-e5-small", "peft.kind=pfeiffer",
                                "schedule.name=standard", f"trainer.batch_size={args.batch}",
                                f"fisher.num_batches={fisher_batches}",
                                "fisher.estimator=argmax_batch", "model.dropout=0.1"])
    make_mesh(config.mesh)
    built = build_run(config)
    parts, data, model = built.parts, built.data, built.model_program()
    lr = lr_schedule(config.optimizer, 100)
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    program = TrainProgram(model, optimizer, lr)
    tracked = TrainProgram(model, optimizer, lr, StepOptions(track_in_step=True))
    state = init_state(parts.params, optimizer, jnp.ones(len(parts.groups), bool), 0)
    rng = np.random.default_rng(0)
    vocab = parts.frozen["encoder"]["embeddings"]["word_embeddings"]["embedding"][...].shape[0]

    def batch():
        ids = rng.integers(5, vocab, size=(args.batch, args.length)).astype(np.int32)
        return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.ones_like(jnp.asarray(ids)),
                "token_type_ids": jnp.zeros_like(jnp.asarray(ids)),
                "labels": jnp.asarray(rng.integers(0, 8, size=args.batch).astype(np.int32))}

    batches = [batch() for _ in range(4)]
    for prog in (program, tracked):
        state, metrics = prog.train_step(state, parts.frozen, batches[0])
        jax.block_until_ready(metrics)

    def step_times(n, prog=program):
        nonlocal state
        times = []
        for i in range(n):
            start = time.perf_counter()
            state, metrics = prog.train_step(state, parts.frozen, batches[i % 4])
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    tracker = FisherTracker(config, model, parts.groups, parts.frozen, data.train)
    tracker.batches = _RandomBatches(batches)
    tracker(state.params, 0)  # compile

    def fun_check():
        start = time.perf_counter()
        tracker(state.params, 1)
        return time.perf_counter() - start

    return step_times, fun_check, lambda n: step_times(n, tracked)


class _RandomBatches:
    """Feeds the tracker the benchmark's fixed-length batches (as numpy)."""

    def __init__(self, batches):
        self.batches, self.i = [{k: np.asarray(v) for k, v in b.items()} for b in batches], 0

    def __next__(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fisher-batches", type=int, default=41)
    args = parser.parse_args()
    python = adapters_python()
    model, _ = load_pretrained("multilingual-e5-small")
    with tempfile.TemporaryDirectory() as scratch:
        hf_dir = save_pretrained(model, Path(scratch) / "e5")
        del model
        step_times, fun_check, tracked_times = jaxcult_side(args, args.fisher_batches)
        ours, theirs, ours_fun, theirs_fun, tracked = [], [], [], [], []
        for _ in range(args.rounds):
            out = subprocess.run([str(python), str(HERE / "_adapters_reference.py"), str(hf_dir),
                                  str(args.batch), str(args.length), str(args.steps),
                                  str(args.fisher_batches)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            ref = json.loads(out.stdout.strip().splitlines()[-1])
            theirs.append(ref["step_seconds"])
            theirs_fun.append(ref["fun_check_seconds"])
            ours.append(step_times(args.steps))
            tracked.append(tracked_times(args.steps))
            ours_fun.append(fun_check())
    o, t = statistics.median(ours), statistics.median(theirs)
    of, tf = statistics.median(ours_fun), statistics.median(theirs_fun)
    print(f"e5-small Pfeiffer rf16, batch {args.batch}, length {args.length}, CPU")
    print(f"train step: jaxcult {o * 1e3:.0f} ms, pytorch+adapters {t * 1e3:.0f} ms, "
          f"speed-up {t / o:.2f}x")
    print(f"FUN check ({args.fisher_batches} batches): jaxcult {of:.1f} s, official deepcopy "
          f"approach {tf:.1f} s, speed-up {tf / of:.2f}x")
    tr = statistics.median(tracked)
    print(f"tracking every step (fisher.in_step): {tr * 1e3:.0f} ms vs {o * 1e3:.0f} ms untracked, "
          f"overhead {100 * (tr / o - 1):+.1f}%")


if __name__ == "__main__":
    main()
