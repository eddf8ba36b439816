"""Batched generation for every decoder family: greedy and sampled decoding with the KV cache,
stop tokens and stop strings, static shapes (length buckets), and continuation scoring."""

from jaxcult.generation.api import generate, generate_ids
from jaxcult.generation.engine import Completion, Generator
from jaxcult.generation.scoring import ContinuationScore, next_token_logprobs, option_logprobs, score

__all__ = ["Completion", "ContinuationScore", "Generator", "generate", "generate_ids", "next_token_logprobs",
           "option_logprobs", "score"]
