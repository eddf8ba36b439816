"""Compile time and step time of the LoRA train step on SmolLM2-135M (q and v on 30 layers).

    python benchmarks/lora_step.py [--batch 4] [--length 64] [--steps 8]

The optimizer updates groups of equal shapes as one vmapped update, so the compiled program
holds 2 updates (q, v) for the 60 LoRA groups. Prints the trace/lower and compile times, the
median step time after warm-up, and the number of groups and of shape buckets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcult.config_loading import load_config
from jaxcult.run.build import build_run
from jaxcult.sharding import make_mesh
from jaxcult.trainers.optim import _shape_buckets, lr_schedule, masked_optimizer
from jaxcult.trainers.program import TrainProgram, init_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    config = load_config(None, ["task.name=causal_lm", "model.name=smollm2-135m-instruct",
                                "peft.kind=lora", "peft.target_modules=[q, v]",
                                "schedule.name=standard", f"trainer.batch_size={args.batch}",
                                "data.max_train_examples=64", "data.max_eval_examples=8",
                                "data.target_languages=[en]"])
    make_mesh(config.mesh)
    built = build_run(config)
    parts = built.parts
    lr = lr_schedule(config.optimizer, 100)
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    program = TrainProgram(built.model_program(), optimizer, lr)
    state = init_state(parts.params, optimizer, jnp.ones(len(parts.groups), bool), 0)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 49000, size=(args.batch, args.length)).astype(np.int32))
    batch = {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "labels": jnp.roll(ids, -1, 1),
             "loss_mask": jnp.ones_like(ids)}
    start = time.perf_counter()
    lowered = program.train_step.lower(state, parts.frozen, batch)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        state, metrics = compiled(state, parts.frozen, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - begin)
    buckets = len(_shape_buckets(parts.params, parts.groups))
    print(f"LoRA q,v on SmolLM2-135M: {len(parts.groups)} groups in {buckets} shape buckets, "
          f"batch {args.batch} x {args.length}")
    print(f"trace+lower {traced - start:.2f} s, compile {done - traced:.2f} s, "
          f"step median {statistics.median(times[2:]):.3f} s (first {times[0]:.3f} s)")


if __name__ == "__main__":
    main()
