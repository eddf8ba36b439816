"""Serving throughput: aggregate tokens/s of 16 concurrent clients vs one client on
`jaxcult serve` with SmolLM2-135M-Instruct (CPU), and when a late request is answered.

    python benchmarks/serve.py [--clients 16] [--requests 4] [--max-tokens 64] [--rounds 3]

Starts `jaxcult serve` in a subprocess; every client sends greedy chat requests one after the
other (the official `openai` client), each a different prompt asking for a detailed answer.
Tokens are the server's own count of generated tokens (`usage.completion_tokens`; a reply may
end at EOS before max_tokens). One-client and many-client rounds alternate so that machine
noise hits both; medians of the rounds are printed with the load average. Then: a one-token
request sent while a long request decodes, timed against the same request alone, which shows
whether late requests join at the next step or wait for the next batch.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

TOPICS = ["the capital of France", "how rain forms", "a good breakfast", "learning a language",
          "the history of tea", "why the sky is blue", "a short poem about autumn",
          "chess openings", "how to bake bread", "the moon landing", "saving money",
          "how bees make honey", "trains in Japan", "the Mexican Day of the Dead",
          "German bread", "British weather"]


def start_server(args) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "jaxcult.cli", "serve", "smollm2-135m-instruct", "--port", "0",
         f"batch_size={args.clients}", f"max_new_tokens={args.max_tokens}",
         "length_buckets=[64, 128]", "--gather-ms", str(args.gather_ms)],
        stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"on (http://\S+/v1)", line)
        if found:
            return server, found.group(1)
    raise SystemExit(f"jaxcult serve exited with {server.wait()}")


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="per client and round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gather-ms", type=float, default=50.0, help="the server's setting")
    args = parser.parse_args()
    server, url = start_server(args)
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    def ask(number: int, max_tokens: int = args.max_tokens) -> int:
        topic = TOPICS[number % len(TOPICS)]
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct", temperature=0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"Tell me about {topic}. Please be detailed."}])
        return reply.usage.completion_tokens

    def one_client(requests: int) -> tuple[int, float]:
        started = time.perf_counter()
        tokens = sum(ask(i) for i in range(requests))
        return tokens, time.perf_counter() - started

    def many_clients() -> tuple[int, float]:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            counts = pool.map(lambda c: sum(ask(c * args.requests + i)
                                            for i in range(args.requests)), range(args.clients))
            tokens = sum(counts)
        return tokens, time.perf_counter() - started

    try:
        one_client(1)        # compile: one row, then every row bucket the rounds will use
        many_clients()
        single, multi = [], []
        for _ in range(args.rounds):
            tokens, seconds = one_client(args.requests)
            single.append(tokens / seconds)
            tokens, seconds = many_clients()
            multi.append(tokens / seconds)
        load = os.getloadavg()[0]
        one, many = statistics.median(single), statistics.median(multi)
        print(f"one client:  {one:7.1f} tok/s (rounds: {', '.join(f'{x:.1f}' for x in single)})")
        print(f"{args.clients} clients: {many:7.1f} tok/s (rounds: "
              f"{', '.join(f'{x:.1f}' for x in multi)})")
        print(f"aggregate ratio: {many / one:.2f}x   (load average at the end: {load:.2f}, "
              f"{os.cpu_count()} cores)")

        started = time.perf_counter()
        ask(0, 1)
        alone = time.perf_counter() - started
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            long = pool.submit(ask, 1)
            time.sleep(0.3)
            late_sent = time.perf_counter()
            pool.submit(ask, 2, 1).result()
            late = time.perf_counter() - late_sent
            long.result()
            whole = time.perf_counter() - started
        print(f"a 1-token request: {alone * 1e3:.0f} ms alone, {late * 1e3:.0f} ms when sent "
              f"0.3 s into a {args.max_tokens}-token request that took {whole * 1e3:.0f} ms "
              f"(joins the next batch)")
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[1]
        print("".join(re.findall(r"serve: stopped after .*", log)))   # requests per batch


if __name__ == "__main__":
    main()
