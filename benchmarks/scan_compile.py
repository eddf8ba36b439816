"""Compile time of a deep decoder's train step, layers unrolled against `model.scan_layers`.

    python benchmarks/scan_compile.py [--layers 32] [--hidden 64] [--rounds 3] [--remat layer]

The same LoRA train step (tiny width, `--layers` deep, abstract inputs: no weights, no data)
is traced, lowered and compiled by `jaxcult plan`'s machinery, unrolled and scanned in
interleaved rounds; medians are printed with their ratio (scanned / unrolled) and the 1-minute
load average. Each round builds a new program, so nothing is reused from a cache.
"""

from __future__ import annotations

import argparse
import os
import statistics

from jaxcult.config_loading import load_config
from jaxcult.run.plan_figures import make_plan


def overrides(layers: int, hidden: int, remat: str) -> list[str]:
    return ["task.name=causal_lm", "model.name=random", "model.max_length=128",
            f"model.overrides={{model_type: llama, vocab_size: 1024, hidden_size: {hidden}, "
            f"num_hidden_layers: {layers}, num_attention_heads: 4, num_key_value_heads: 2, "
            f"intermediate_size: {4 * hidden}}}",
            "peft.kind=lora", "schedule.name=standard", "trainer.batch_size=4", f"model.remat={remat}",
            "mesh.data=1"]


def seconds(settings: list[str]) -> tuple[float, float]:
    plan = make_plan(load_config(None, settings), None)
    return plan.lower_seconds, plan.compile_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--remat", default="none", choices=["none", "layer", "layer_save_dots"])
    args = parser.parse_args()
    common = overrides(args.layers, args.hidden, args.remat)
    times: dict[str, list[tuple[float, float]]] = {"unrolled": [], "scanned": []}
    for _ in range(args.rounds):
        times["unrolled"].append(seconds(common))
        times["scanned"].append(seconds([*common, "model.scan_layers=true"]))
    print(f"{args.layers}-layer decoder, hidden {args.hidden}, LoRA step, remat {args.remat}; "
          f"medians of {args.rounds} interleaved rounds; load {os.getloadavg()[0]:.2f}")
    medians = {}
    for name, rows in times.items():
        lower = statistics.median(r[0] for r in rows)
        compiled = statistics.median(r[1] for r in rows)
        total = statistics.median(sum(r) for r in rows)
        medians[name] = (lower, compiled, total)
        print(f"  {name:<9} trace+lower {lower:6.2f} s  compile {compiled:6.2f} s  total {total:6.2f} s")
    ratios = [medians["scanned"][i] / medians["unrolled"][i] for i in range(3)]
    print(f"  scanned / unrolled: trace+lower {ratios[0]:.3f}x  compile {ratios[1]:.3f}x  "
          f"total {ratios[2]:.3f}x")


if __name__ == "__main__":
    main()
