"""The one thing a pipeline stage needs from a chat model: answer a batch of chats.

`ChatModel.reply(chats, config, stream, prefix)` returns one `Reply` per chat in input order.
`stream` numbers independent random streams (a dialogue batch and turn), so sampled outputs do
not depend on how much of a stage ran before a resume. `prefix` starts the assistant's answer
(e.g. "ACTION:"), which keeps small models on the answer format; the reply text includes it.
`EngineChatModel` runs jaxcult's generation engine; `jaxcult.remote.RemoteChatModel` asks a
server; tests pass scripted models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.api import generate_ids
from jaxcult.generation.engine import Generator
from jaxcult.generation.model_defaults import with_model_defaults
from jaxcult.generation.prompts import Chat, render_chat

STREAM_STRIDE = 1 << 20  # batch indices reserved per random stream


@dataclass(frozen=True)
class Reply:
    text: str
    error: str | None = None   # the prompt could not run (e.g. longer than the largest bucket)


class ChatModel(Protocol):
    name: str

    def reply(self, chats: Sequence[Chat], config: GenerationConfig, stream: int = 0,
              prefix: str = "") -> list[Reply]: ...


class EngineChatModel:
    """A jaxcult causal LM with a chat template, decoding with the batched engine (one compiled
    program per decoding setting, reused across calls)."""

    def __init__(self, name: str, model, tokenizer, defaults: dict | None = None) -> None:
        """`defaults`: the model's own sampling settings (generation_config.json), used where
        a stage's config leaves them unset."""
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{name}: the tokenizer has no chat template; role-play, judging "
                            f"and annotation need a chat model")
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.defaults = defaults or {}
        self._generators: dict[str, Generator] = {}

    def generator(self, config: GenerationConfig) -> Generator:
        """The engine decoding with `config` (made once per setting)."""
        key = config.model_dump_json()
        if key not in self._generators:
            self._generators[key] = Generator(self.model, self.tokenizer,
                                              with_model_defaults(config, self.defaults))
        return self._generators[key]

    def reply(self, chats: Sequence[Chat], config: GenerationConfig, stream: int = 0,
              prefix: str = "") -> list[Reply]:
        if not chats:
            return []
        texts = [render_chat(chat, self.tokenizer) + prefix for chat in chats]
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        completions = generate_ids(self.generator(config), ids, first_batch=stream * STREAM_STRIDE)
        return [Reply(prefix + c.text, c.error) for c in completions]
