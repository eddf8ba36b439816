"""Peak memory of a DPO train step against an SFT step on the same pairs (LoRA, SmolLM2-135M).

    python benchmarks/preference_memory.py [--pairs 4] [--length 256] [--model NAME]

The DPO step runs the policy forward and backward and, in the same program, the reference
forward with the adapters switched off (`task.reference: adapters_off`); the SFT step trains the
causal-LM loss on the same 2 x pairs sequences. Both programs are compiled for the same batch
and XLA's memory analysis of each is printed (with its FLOP count, which shows the
reference forward is there): arguments (parameters, optimizer state, batch),
temporaries, and their sum, the step's peak; then DPO / SFT. The reference forward keeps no
activations for the backward, so the ratio should stay near 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxcult.config_loading import load_config
from jaxcult.run.build import build_run
from jaxcult.trainers.optim import lr_schedule, masked_optimizer
from jaxcult.trainers.program import TrainProgram, init_state

WORDS = ("the of and to in is was for on are with as his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each "
         "she which do their time if will way about many then them write would like so these").split()


def write_pairs(folder: Path, pairs: int, words: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    text = lambda n: " ".join(rng.choice(WORDS, n))  # noqa: E731
    rows = [{"prompt": text(words // 4), "chosen": " " + text(words), "rejected": " " + text(words)}
            for _ in range(pairs)]
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def compiled_memory(built, config, batch: dict) -> dict[str, float]:
    parts = built.parts
    lr = lr_schedule(config.optimizer, 100)
    optimizer = masked_optimizer(config.optimizer, parts.groups, lr)
    program = TrainProgram(built.model_program(), optimizer, lr)
    state = init_state(parts.params, optimizer, jnp.ones(len(parts.groups), bool), 0)
    compiled = program.train_step.lower(state, parts.frozen, batch).compile()
    analysis = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost).get("flops", float("nan"))
    arguments = analysis.argument_size_in_bytes
    temporaries = analysis.temp_size_in_bytes
    peak = arguments + temporaries + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    return {"arguments_mib": arguments / 2**20, "temporaries_mib": temporaries / 2**20,
            "peak_mib": peak / 2**20, "gflops": flops / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--length", type=int, default=256, help="tokens per sequence (about)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    common = [f"model.name={args.model}", f"model.max_length={args.length}", "peft.kind=lora",
              "peft.target_modules=[q, k, v, o]", "schedule.name=standard",
              "fisher.track_every=0", f"trainer.batch_size={args.pairs}",
              "logging.progress=off"]
    with tempfile.TemporaryDirectory() as folder:
        write_pairs(Path(folder), args.pairs, words=args.length // 2)
        dpo_config = load_config(None, [*common, "task.name=preference",
                                        "data.name=preference_jsonl", f"data.manual_dir={folder}",
                                        "data.eval_split=validation"])
        dpo = build_run(dpo_config)
        pairs = {k: jnp.asarray(v[:args.pairs]) for k, v in dpo.data.train.arrays.items()}
        sft_config = load_config(None, [*common, "task.name=causal_lm",
                                        "data.max_train_examples=8", "data.max_eval_examples=8",
                                        "data.target_languages=[en]"])
        sft = build_run(sft_config)
        flat = {k: v.reshape(2 * args.pairs, -1) for k, v in pairs.items()}
        rows = {"sft": compiled_memory(sft, sft_config, flat),
                "dpo": compiled_memory(dpo, dpo_config, pairs)}
    tokens = int(pairs["input_ids"].size)
    print(f"{args.model}, LoRA q/k/v/o, {args.pairs} pairs = {2 * args.pairs} sequences of "
          f"{pairs['input_ids'].shape[-1]} tokens ({tokens} tokens per step)")
    for name, row in rows.items():
        print(f"  {name}: arguments {row['arguments_mib']:8.1f} MiB  temporaries "
              f"{row['temporaries_mib']:8.1f} MiB  peak {row['peak_mib']:8.1f} MiB  "
              f"({row['gflops']:.0f} GFLOP)")
    print(f"  peak DPO / SFT: {rows['dpo']['peak_mib'] / rows['sft']['peak_mib']:.3f}")


if __name__ == "__main__":
    main()
