"""`RemoteChatModel`: the CLCA stages' `ChatModel` on an OpenAI-compatible chat endpoint.

Each chat of a batch is one `/chat/completions` request, up to `concurrency` in flight. The
stage's decoding settings map onto the API (greedy is temperature 0; top_k, min_p and
repetition_penalty are sent only when set, as vLLM's extensions); an answer prefix is sent as a
final assistant message with `continue_final_message` (vLLM, SGLang and `jaxcult serve` continue
it; the reply includes the prefix, as the local backend's does). A sampled request carries a seed
derived from the stage's random stream and its place in the batch, so a resumed stage asks the
same questions. A request the server refuses (400, e.g. a prompt beyond its context) becomes
that record's error, as a too-long prompt does locally; a refusal of the model or the key
(401/403/404) stops the stage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.chat import STREAM_STRIDE, Reply
from jaxcult.generation.prompts import Chat
from jaxcult.remote.cache import ResponseCache, request_key
from jaxcult.remote.client import Client, RemoteRefusal
from jaxcult.remote.settings import RemoteModel

log = logging.getLogger(__name__)
ENGINE_ONLY = {"batch_size", "length_buckets", "chunk", "prefix_cache_mb"}  # local engine only
STOPPING = {401: "the API key was refused", 403: "access was refused",
            404: "the endpoint or model was not found"}


def chat_body(model: str, chat: Chat, config: GenerationConfig, prefix: str,
              seed: int | None) -> dict:
    """The `/chat/completions` request for one chat under a stage's decoding settings."""
    messages = list(chat) + ([{"role": "assistant", "content": prefix}] if prefix else [])
    body: dict = {"model": model, "messages": messages, "max_tokens": config.max_new_tokens,
                  "temperature": config.temperature if config.do_sample else 0.0}
    if config.do_sample:
        body["top_p"] = config.top_p
        if config.top_k:
            body["top_k"] = config.top_k
        if config.min_p:
            body["min_p"] = config.min_p
        if seed is not None:
            body["seed"] = seed
    if config.repetition_penalty != 1.0:
        body["repetition_penalty"] = config.repetition_penalty
    if config.stop_strings:
        body["stop"] = list(config.stop_strings)
    if prefix:
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def reply_text(response: dict, route: str) -> str:
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{route}: the answer has no choices[0].message.content "
                        f"({str(response)[:200]})") from None
    return content or ""


class RemoteChatModel:
    """Chats answered by a remote model (`cache_file`: where answers are kept, or None)."""

    def __init__(self, settings: RemoteModel, cache_file: Path | None, client: Client | None = None
                 ) -> None:
        self.settings = settings
        self.name = settings.model
        self.client = client or Client(settings)
        self.cache = ResponseCache(cache_file) if settings.cache and cache_file else None
        self.asked = 0   # requests sent (answers taken from the cache not counted)
        self._counting = threading.Lock()
        self._noted: set[str] = set()   # engine-only settings already warned about

    def reply(self, chats: Sequence[Chat], config: GenerationConfig, stream: int = 0,
              prefix: str = "") -> list[Reply]:
        local = sorted(config.model_fields_set & ENGINE_ONLY - self._noted)
        if local:
            self._noted.update(local)
            log.warning(f"remote model {self.name}: generation.{', generation.'.join(local)} "
                        f"shape local decoding only; its server batches the requests")
        if config.stop_token_ids:
            raise UserError(f"remote model {self.name}: generation.stop_token_ids cannot be sent "
                            f"to an API (token ids are the server's); use stop_strings")
        seeds = [config.seed + stream * STREAM_STRIDE + i if config.do_sample else None
                 for i in range(len(chats))]
        bodies = [chat_body(self.settings.model, chat, config, prefix, seed)
                  for chat, seed in zip(chats, seeds)]
        route = f"{self.settings.endpoint}/chat/completions"
        return [Reply("", answer) if isinstance(answer, str)
                else Reply(prefix + reply_text(answer, route)) for answer in self.answers(bodies)]

    def answers(self, bodies: Sequence[dict]) -> list[dict | str]:
        """The server's response to each `/chat/completions` body (up to `concurrency` in
        flight, cached ones not asked again), or the reason it refused that request."""
        with ThreadPoolExecutor(self.settings.concurrency) as pool:
            return list(pool.map(self._ask, bodies))

    def _ask(self, body: dict) -> dict | str:
        key = request_key(self.settings.endpoint, body)
        response = self.cache.get(key) if self.cache else None
        if response is None:
            try:
                with self._counting:
                    self.asked += 1
                response = self.client.post("chat/completions", body)
            except RemoteRefusal as refusal:
                if refusal.status in STOPPING:
                    raise UserError(f"{self.settings.endpoint}: {STOPPING[refusal.status]} "
                                    f"(model {self.name}): {refusal.message}") from None
                return f"HTTP {refusal.status}: {refusal.message}"
            if self.cache is not None:
                self.cache.put(key, response)
        return response
