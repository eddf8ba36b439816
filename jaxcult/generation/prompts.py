"""Prompts as token ids: plain text, or chats rendered with the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxcult.errors import UserError

Chat = list[dict[str, str]]


def render_chat(messages: Chat, tokenizer, *, add_generation_prompt: bool = True) -> str:
    """A conversation as the model's chat template writes it (ending with the assistant's cue).
    A template that refuses a conversation (Gemma 2's refuses a system turn) is obeyed: one
    line saying why, as the stock template says it."""
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template (chat prompts need one; pass plain "
                        "prompts instead)")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except TemplateError as error:
        roles = ", ".join(dict.fromkeys(m.get("role", "?") for m in messages))
        raise UserError(f"the model's chat template refuses a conversation of roles {roles}: "
                        f"{error}") from None


def as_chat(prompt: str | Chat, system: str | None = None) -> Chat:
    """A plain prompt as a one-turn user chat (with an optional system message)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def encode(prompts: Sequence[str | Chat], tokenizer, *, chat: bool = False,
           system: str | None = None) -> list[list[int]]:
    """Token ids of each prompt. Chats (lists of messages, or every prompt when `chat`) are
    rendered with the chat template, which carries its own special tokens; plain prompts get
    the tokenizer's special tokens (BOS), as `transformers` does."""
    ids = []
    for prompt in prompts:
        if chat or not isinstance(prompt, str):
            text = render_chat(as_chat(prompt, system), tokenizer)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids.append(tokenizer(prompt)["input_ids"])
    return ids


def is_chat(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                    and m.get("role") in ("system", "user", "assistant") for m in value))
