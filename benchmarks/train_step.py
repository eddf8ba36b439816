"""Train-step speed of jaxcult vs PyTorch + AdapterHub `adapters` (the paper's stack) at equal
work, the cost of one FUN check (jaxcult's pure function vs the official deep copy + N batches),
and the overhead of per-step Fisher tracking.

    python benchmarks/train_step.py [--batch 32] [--length 64] [--steps 10] [--rounds 3] [--top 1,3]
                                    [--dtype float32|bfloat16]

Both sides train multilingual-e5-small with Pfeiffer adapters (rf 16) and dropout 0.1 on the
same token ids and labels (drawn here, handed to the reference as a file), with every adapter
trainable and with only the top k (and the head): jaxcult's truncated backward (its default)
against `requires_grad`. The PyTorch side runs in its own virtual environment
(`benchmarks/.venv-adapters`, created on first use: `adapters` pins transformers 4.57). Rounds
alternate between the two stacks so machine noise hits both; medians of the rounds are printed
with the 1-minute load average before and after. Read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
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


def draw_batches(args, vocab: int, num_labels: int, count: int = 4) -> list[dict[str, np.ndarray]]:
    """The batches both sides train on: random token ids (no padding) and labels."""
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(5, vocab, size=(args.batch, args.length)).astype(np.int32),
             "attention_mask": np.ones((args.batch, args.length), np.int32),
             "token_type_ids": np.zeros((args.batch, args.length), np.int32),
             "labels": rng.integers(0, num_labels, size=args.batch).astype(np.int32)}
            for _ in range(count)]


def jaxcult_side(args):
    """(batches, num_labels, step_seconds(n, top), fun_check(), tracked_seconds(n),
    eval_seconds(n)) of jaxcult's side; `top` None trains every adapter, k only the top k and
    the head; eval_seconds times the evaluation step (forward only) on the same batches."""
    config = load_config(None, ["model.name=multilingual-e5-small", "peft.kind=pfeiffer",
                                "schedule.name=fun", f"trainer.batch_size={args.batch}",
                                f"fisher.num_batches={args.fisher_batches}",
                                "fisher.estimator=argmax_batch", "model.dropout=0.1",
                                f"model.dtype={args.dtype}", f"model.compute_dtype={args.dtype}"])
    make_mesh(config.mesh)
    built = build_run(config)
    parts, data, model = built.parts, built.data, built.model_program()
    lr = lr_schedule(config.optimizer, 100)
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    program = TrainProgram(model, optimizer, lr, StepOptions(truncate_backward=True))
    tracked = TrainProgram(model, optimizer, lr, StepOptions(track_in_step=True))
    state = init_state(parts.params, optimizer, jnp.ones(len(parts.groups), bool), 0)
    vocab = parts.frozen["encoder"]["embeddings"]["word_embeddings"]["embedding"][...].shape[0]
    batches = draw_batches(args, vocab, built.plugins.task.num_labels)
    on_device = [{k: jnp.asarray(v) for k, v in b.items()} for b in batches]

    def mask_of(top: int | None) -> jax.Array:
        layers = parts.layer_groups
        opened = set(layers if top is None else layers[-top:]) | {"head"}
        return jnp.asarray([g in opened for g in parts.groups])

    def step_times(n: int, top: int | None = None, prog: TrainProgram = program) -> float:
        nonlocal state
        state = state.replace(mask=mask_of(top))
        state, metrics = prog.train_step(state, parts.frozen, on_device[0])  # compiled once
        jax.block_until_ready(metrics)
        times = []
        for i in range(n):
            start = time.perf_counter()
            state, metrics = prog.train_step(state, parts.frozen, on_device[i % len(on_device)])
            jax.block_until_ready(metrics["loss"])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    tracker = FisherTracker(config, model, parts.groups, parts.frozen, data.train)
    tracker.batches = _RandomBatches(batches)
    tracker(state.params, 0)  # compile

    def fun_check() -> float:
        start = time.perf_counter()
        tracker(state.params, 1)
        return time.perf_counter() - start

    def eval_times(n: int) -> float:
        jax.block_until_ready(model.eval_step(state.params, parts.frozen, on_device[0]))
        times = []
        for i in range(n):
            start = time.perf_counter()
            jax.block_until_ready(model.eval_step(state.params, parts.frozen,
                                                  on_device[i % len(on_device)]))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return (batches, built.plugins.task.num_labels, step_times, fun_check,
            lambda n: step_times(n, None, tracked), eval_times)


class _RandomBatches:
    """Feeds the tracker the benchmark's fixed-length batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches, self.i = batches, 0

    def __next__(self):
        self.i += 1
        return self.batches[self.i % len(self.batches)]


def reference(python: Path, hf_dir: Path, batches_file: Path, args, num_labels: int) -> dict:
    out = subprocess.run([str(python), str(HERE / "_adapters_reference.py"), str(hf_dir),
                          str(batches_file), str(args.steps), str(args.fisher_batches),
                          str(num_labels), args.top, args.dtype], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", default="1,3", help="top-k trainable settings besides all")
    parser.add_argument("--fisher-batches", type=int, default=41)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16: jaxcult's model.dtype and compute_dtype against PyTorch's "
                             "bfloat16 frozen model under CPU autocast (adapters float32 on both)")
    args = parser.parse_args()
    tops = [int(k) for k in args.top.split(",") if k]
    python = adapters_python()
    load_before = os.getloadavg()[0]
    model, _ = load_pretrained("multilingual-e5-small")
    with tempfile.TemporaryDirectory() as scratch:
        hf_dir = save_pretrained(model, Path(scratch) / "e5")
        del model
        batches, num_labels, step_times, fun_check, tracked_times, _ = jaxcult_side(args)
        batches_file = Path(scratch) / "batches.npz"
        np.savez(batches_file, **{f"{k}_{i}": v for i, b in enumerate(batches) for k, v in b.items()})
        names = ["all", *(f"top-{k}" for k in tops)]
        ours = {n: [] for n in [*names, "fun", "tracked"]}
        theirs = {n: [] for n in [*names, "fun"]}
        for _ in range(args.rounds):
            ref = reference(python, hf_dir, batches_file, args, num_labels)
            for name in names:
                theirs[name].append(ref["step_seconds"][name])
            theirs["fun"].append(ref["fun_check_seconds"])
            ours["all"].append(step_times(args.steps))
            for k in tops:
                ours[f"top-{k}"].append(step_times(args.steps, k))
            ours["tracked"].append(tracked_times(args.steps))
            ours["fun"].append(fun_check())
    median = {side: {n: statistics.median(v) for n, v in d.items()}
              for side, d in (("ours", ours), ("theirs", theirs))}
    print(f"e5-small Pfeiffer rf16, {args.dtype}, dropout 0.1, batch {args.batch} x {args.length} "
          f"(no padding), "
          f"same ids both sides; medians of {args.rounds} interleaved rounds; load "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; ratio = PyTorch / jaxcult")
    for name in names:
        o, t = median["ours"][name], median["theirs"][name]
        print(f"  step, {name:5s} trainable: jaxcult {o * 1e3:6.0f} ms, pytorch+adapters "
              f"{t * 1e3:6.0f} ms, ratio {t / o:.2f}x")
    of, tf = median["ours"]["fun"], median["theirs"]["fun"]
    print(f"  FUN check ({args.fisher_batches} batches): jaxcult {of:.1f} s, official deep copy "
          f"{tf:.1f} s, ratio {tf / of:.2f}x")
    tr, o = median["ours"]["tracked"], median["ours"]["all"]
    print(f"  tracking every step (fisher.in_step, full backward): {tr * 1e3:.0f} ms vs "
          f"{o * 1e3:.0f} ms untracked, overhead {100 * (tr / o - 1):+.1f}%")


if __name__ == "__main__":
    main()
