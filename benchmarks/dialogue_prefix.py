"""CLCA role-play with and without the prefix cache: each turn's prompt repeats the dialogue so
far, which the cache does not recompute.

    python benchmarks/dialogue_prefix.py [--dialogues 8] [--turns 3] [--rounds 2]

Equal work: the same dialogues (the CLCA demo's scenarios, one per culture in turn), both
agents played by SmolLM2-135M-Instruct, greedy, 32 new tokens, answers started with "ACTION:",
malformed answers taken as speech (the demo's settings), the same length buckets, one batch of
all dialogues; `generation.prefix_cache_mb` 0 against 2048. Both are compiled in a warm-up
first, then timed in interleaved rounds. Prints each side's median wall time, the ratio, the
share of prompt tokens the cache reused, whether both produced the same dialogues, and the
1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from jaxcult.config import GenerationConfig
from jaxcult.data.cultures import find_culture, load_cultures
from jaxcult.data.scenarios import read_scenarios
from jaxcult.generation.chat import EngineChatModel
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.recipes.clca.roleplay import Behaviour, Dialogue, simulate

SCENARIOS = Path(__file__).resolve().parent.parent / "experiments" / "clca" / "scenarios"
CULTURES = ("uk", "china", "germany", "mexico", "japan")


def dialogues(n: int) -> list[Dialogue]:
    known = load_cultures()
    per_culture = {key: read_scenarios(SCENARIOS / f"{key}.jsonl") for key in CULTURES}
    picked = []
    for index in range(n):
        key = CULTURES[index % len(CULTURES)]
        picked.append(Dialogue(per_culture[key][index // len(CULTURES)],
                               find_culture(known, key, "benchmark"), 0))
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    loaded = load_pretrained("smollm2-135m-instruct")
    plain = GenerationConfig(max_new_tokens=32, batch_size=args.dialogues,
                             length_buckets=[256, 512, 768, 1024])
    cached = plain.model_copy(update={"prefix_cache_mb": 2048})

    def run(config: GenerationConfig) -> tuple[list[dict], EngineChatModel]:
        """One simulation with a fresh engine (an empty prefix cache; programs stay compiled)."""
        model = EngineChatModel("smollm2-135m-instruct", *loaded)
        how = Behaviour(config, repair=False, prefix="ACTION:", on_parse_failure="speak")
        return simulate(dialogues(args.dialogues), model, model, max_turns=args.turns,
                        how=how), model

    (plain_records, _), (cached_records, engine) = run(plain), run(cached)  # warm-up: compiled
    store = engine.generator(cached).prefix_cache
    reused, sent = store.reused_tokens, store.prompt_tokens
    same = plain_records == cached_records
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    for _ in range(args.rounds):
        for name, config in (("plain", plain), ("cached", cached)):
            started = time.perf_counter()
            run(config)
            times[name].append(time.perf_counter() - started)
    plain_s, cached_s = (statistics.median(times[k]) for k in ("plain", "cached"))
    print(f"{args.dialogues} dialogues x {args.turns} turns, SmolLM2-135M-Instruct, greedy, "
          f"medians of {args.rounds} interleaved rounds")
    print(f"prefix cache off    {plain_s:7.1f} s")
    print(f"prefix cache on     {cached_s:7.1f} s")
    print(f"speed-up            {plain_s / cached_s:7.2f}x")
    print(f"prompt tokens reused (warm-up run): {reused} of {sent} ({reused / sent:.0%})")
    print(f"same dialogues: {same}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
