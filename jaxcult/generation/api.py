"""`generate(model, tokenizer, prompts, config)`: any number of prompts, in input order.

Prompts are sorted by token length and cut into batches of `batch_size`, so each batch is
padded only to the bucket of its own longest prompt; results come back in input order. A prompt
longer than the largest bucket (or empty) is answered with an error, the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jaxcult.config import GenerationConfig
from jaxcult.generation.engine import Completion, Generator
from jaxcult.generation.prompts import Chat, encode


def prompt_error(length: int, buckets: Sequence[int]) -> str | None:
    if length == 0:
        return "empty prompt (no tokens)"
    if length > max(buckets):
        return (f"prompt has {length} tokens, more than the largest length bucket "
                f"({max(buckets)}); add a larger one to generation.length_buckets")
    return None


def generate_ids(generator: Generator, prompts: Sequence[Sequence[int]],
                 on_batch: Callable[[int], None] | None = None, first_batch: int = 0
                 ) -> list[Completion]:
    """Completions of tokenised prompts (input order); `on_batch(n)` after each batch of n."""
    config = generator.config
    results: dict[int, Completion] = {}
    runnable = []
    for index, prompt in enumerate(prompts):
        error = prompt_error(len(prompt), config.length_buckets)
        if error is None:
            runnable.append(index)
        else:
            results[index] = Completion("", [], "error", len(prompt), error)
    runnable.sort(key=lambda i: len(prompts[i]))
    size = config.batch_size
    for number, start in enumerate(range(0, len(runnable), size)):
        batch = runnable[start:start + size]
        outputs = generator.run_batch([prompts[i] for i in batch], first_batch + number)
        results.update(zip(batch, outputs))
        if on_batch is not None:
            on_batch(len(batch))
    return [results[i] for i in range(len(prompts))]


def generate(model, tokenizer, prompts: Sequence[str | Chat],
             config: GenerationConfig = GenerationConfig(), *, chat: bool = False,
             system: str | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[Completion]:
    """Generate for plain prompts or chats (lists of `{"role", "content"}`; `chat=True`
    treats plain prompts as user turns) with `model` (a jaxcult causal LM, LoRA or adapters
    included) and its tokenizer."""
    generator = Generator(model, tokenizer, config)
    return generate_ids(generator, encode(prompts, tokenizer, chat=chat, system=system), on_batch)
