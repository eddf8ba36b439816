"""Backbone bytes of a LoRA train step on a quantised base (NF4, NF4 + double quantisation,
int8) against the bfloat16 base, from XLA's memory analysis of the compiled step.

    python benchmarks/quantized_memory.py [--model smollm2-135m-instruct] [--batch 4] [--length 256]

Each variant compiles the causal-LM LoRA step (q, k, v, o, gate, up, down; compute in
bfloat16) for the same batch. The backbone's bytes are the step's argument bytes less the
train state (LoRA factors, Adam moments, mask) and the batch, so they are what the compiled
program really holds for the frozen model; temporaries are printed beside them. The embedding
table (tied to the output projection in SmolLM2) stays in bfloat16, as bitsandbytes' 4-bit
loading keeps it, except in the variant that quantises it too (`model.quantize_embeddings`).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from preference_memory import compiled_memory

from jaxcult.config_loading import load_config
from jaxcult.run.build import build_run
from jaxcult.trainers.optim import lr_schedule, masked_optimizer
from jaxcult.trainers.program import init_state

VARIANTS = {
    "bfloat16": [],
    "nf4": ["model.quantize=nf4"],
    "nf4 + double quantisation": ["model.quantize=nf4", "model.quantize_double=true"],
    "nf4 + double, embeddings": ["model.quantize=nf4", "model.quantize_double=true",
                                 "model.quantize_embeddings=true"],
    "int8": ["model.quantize=int8"],
}


def nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def measure(common: list[str], extra: list[str], batch_size: int) -> dict[str, float]:
    config = load_config(None, [*common, *extra])
    built = build_run(config)
    batch = {k: jnp.asarray(v[:batch_size]) for k, v in built.data.train.arrays.items()}
    parts = built.parts
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr_schedule(config.optimizer, 100))
    state = init_state(parts.params, optimizer, jnp.ones(len(parts.groups), bool), 0)
    row = compiled_memory(built, config, batch)
    row["backbone_mib"] = row["arguments_mib"] - (nbytes(state) + nbytes(batch)) / 2**20
    row["frozen_state_mib"] = nbytes(parts.frozen) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    common = [f"model.name={args.model}", "task.name=causal_lm", f"model.max_length={args.length}",
              "model.dtype=bfloat16", "model.compute_dtype=bfloat16", "peft.kind=lora",
              "peft.target_modules=[q, k, v, o, gate, up, down]", "schedule.name=standard",
              "fisher.track_every=0", f"trainer.batch_size={args.batch}", "logging.progress=off",
              f"data.max_train_examples={args.batch}", "data.max_eval_examples=4",
              "data.target_languages=[en]"]
    rows = {name: measure(common, extra, args.batch) for name, extra in VARIANTS.items()}
    base = rows["bfloat16"]["backbone_mib"]
    print(f"{args.model}, LoRA on every projection, {args.batch} x {args.length} tokens, "
          f"bfloat16 compute")
    for name, row in rows.items():
        print(f"  {name:<26} backbone {row['backbone_mib']:7.1f} MiB ({row['backbone_mib'] / base:.3f}x)"
              f"  frozen state {row['frozen_state_mib']:7.1f} MiB  temporaries "
              f"{row['temporaries_mib']:7.1f} MiB  peak {row['peak_mib']:7.1f} MiB")


if __name__ == "__main__":
    main()
