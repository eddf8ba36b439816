"""The care judge's metrics of one reply: the shared post and reply run once, against a full
forward per metric.

    python benchmarks/judge_prefix.py [--posts 12] [--rounds 3]

Equal work: the same judge prompts (the demo's posts, one fixed reply, the seven built-in
metrics, SmolLM2-135M-Instruct, the demo's batch size and length buckets) and the same five
candidate tokens, scored by `generation.scoring.next_token_logprobs` (one forward per prompt)
and by `generation.shared_prefix.shared_prefix_logprobs`; both are compiled in a warm-up first,
then timed in interleaved rounds. Prints each side's median, the ratio, the largest
difference between their log-probabilities and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from jaxcult.config import GenerationConfig
from jaxcult.generation.scoring import next_token_logprobs, single_token_options
from jaxcult.generation.shared_prefix import shared_prefix_logprobs
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.recipes.care.config import CareJudgeConfig
from jaxcult.recipes.care.judge import metric_settings
from jaxcult.recipes.care.rubrics import BUILT_IN
from jaxcult.recipes.pairs.judges import LogProbJudge

POSTS = Path(__file__).resolve().parent.parent / "experiments" / "care" / "posts.jsonl"
REPLY = ("I'm really sorry you're carrying this. It makes sense that you feel torn: you care "
         "about your family and about yourself. Could you talk with one relative you trust "
         "about how you feel, and give yourself a little time before deciding anything?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_pretrained("smollm2-135m-instruct")
    settings = CareJudgeConfig(answer_prefix="Score: ", generation=GenerationConfig(
        batch_size=16, length_buckets=[192, 256, 320, 384]))
    judges = [LogProbJudge(metric_settings(settings, metric, "smollm2-135m-instruct"), model,
                           tokenizer) for metric in BUILT_IN.values()]
    posts = [json.loads(line)["text"] for line in POSTS.read_text().splitlines()][:args.posts]
    groups = [[judge.prompt({"prompt": post}, REPLY) for judge in judges] for post in posts]
    candidates = single_token_options(tokenizer, groups[0][0], list("12345"))
    flat = [prompt for group in groups for prompt in group]
    config = settings.generation

    def full():
        return np.stack(next_token_logprobs(model, tokenizer, flat, [candidates] * len(flat),
                                            config, add_special_tokens=False))

    def shared():
        return np.concatenate(shared_prefix_logprobs(model, tokenizer, groups, candidates, config))

    difference = float(np.abs(full() - shared()).max())   # warm-up: both compiled
    times: dict[str, list[float]] = {"full": [], "shared": []}
    for _ in range(args.rounds):
        for name, fn in (("full", full), ("shared", shared)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in flat]
    full_s, shared_s = (statistics.median(times[k]) for k in ("full", "shared"))
    print(f"{len(posts)} replies x {len(judges)} metrics ({len(flat)} prompts, "
          f"{int(np.mean(tokens))} tokens on average), medians of {args.rounds} interleaved rounds")
    print(f"forward per metric  {full_s:7.2f} s")
    print(f"shared prefix       {shared_s:7.2f} s")
    print(f"ratio shared/full   {shared_s / full_s:7.3f}")
    print(f"max |difference| of the log-probabilities: {difference:.2e}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
