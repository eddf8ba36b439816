"""The OpenAI API's request and response shapes, as far as `jaxcult serve` implements them.

Requests are validated into `Request` (what the scheduler needs: token ids, decoding settings,
limits); a parameter the engine cannot honour (`n` > 1, presence/frequency penalties, tools,
logit bias, ...) is refused with a 400 naming it, never ignored. Besides the OpenAI fields the
server takes vLLM's extensions that the engine implements (`top_k`, `min_p`,
`repetition_penalty`, `continue_final_message`, `add_generation_prompt`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jaxcult.generation.engine import Completion
from jaxcult.generation.sampling import Sampling

MAX_TOP_LOGPROBS = 20

# Parameters a client may send that do not change what is generated.
HARMLESS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# Parameters accepted only at the value that means "off".
NEUTRAL = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
           "tools": None, "tool_choice": None, "response_format": None, "functions": None,
           "function_call": None, "echo": False, "suffix": None, "best_of": 1,
           "modalities": None, "prediction": None, "audio": None, "reasoning_effort": None}


class ApiError(Exception):
    """An error answered in the OpenAI error shape (status, message, type, param, code)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = (
            status, message, param, kind, code)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, refusal, ... carry no text

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class Common(BaseModel):
    """Fields both endpoints share."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, gt=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None

    def sampling(self, defaults: dict) -> Sampling:
        """The engine's settings: the request's, else the model's own `defaults` (its
        generation_config.json, as vLLM does), else the API's; temperature 0 is greedy (the
        other sampling knobs unused)."""
        def value(key: str):
            given = key in self.model_fields_set
            return getattr(self, key) if given else defaults.get(key, getattr(self, key))

        if value("temperature") == 0:
            return Sampling(repetition_penalty=value("repetition_penalty"))
        return Sampling(True, value("temperature"), max(value("top_k"), 0), value("top_p"),
                        value("min_p"), value("repetition_penalty"))

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    continue_final_message: bool = False
    add_generation_prompt: bool = True


class CompletionRequest(Common):
    prompt: str | list[str]
    max_tokens: int = Field(16, gt=0)   # the API's default for completions
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


def parse(kind: type[Common], body: Any) -> Common:
    """A validated request, or an ApiError naming the first bad parameter."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = kind.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}", param) from None
    for name, value in (request.model_extra or {}).items():
        if name in HARMLESS:
            continue
        if name in NEUTRAL and value == NEUTRAL[name]:
            continue
        if name in NEUTRAL:
            raise ApiError(400, f"{name}={value!r} is not supported by jaxcult serve (only "
                                f"{NEUTRAL[name]!r})", name)
        raise ApiError(400, f"unknown parameter {name!r}", name)
    if isinstance(request, ChatRequest) and request.top_logprobs is not None \
            and not request.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true", "top_logprobs")
    return request


@dataclass
class Job:
    """One prompt for the scheduler: what to decode and where results go."""

    model: str
    ids: list[int]
    sampling: Sampling
    limit: int
    stops: list[str]
    top_logprobs: int | None   # None: no logprobs
    seed: int | None
    stream: bool
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))


def finish_reason(completion: Completion) -> str:
    return "length" if completion.finish_reason == "length" else "stop"


def usage(completions: list[Completion]) -> dict:
    prompt = sum(c.prompt_tokens for c in completions)
    new = sum(len(c.token_ids) for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


def chat_logprobs(completion: Completion, top: int, token_text) -> dict | None:
    """`choices[i].logprobs` of the chat API: one entry per generated token."""
    if completion.logprobs is None:
        return None

    def entry(token: int, logprob: float) -> dict:
        text = token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [
        {**entry(token, logprob),
         "top_logprobs": [entry(t, v) for t, v in (completion.top_logprobs[i][:top])]}
        for i, (token, logprob) in enumerate(zip(completion.token_ids, completion.logprobs))]}


def completion_logprobs(completion: Completion, top: int, token_text) -> dict | None:
    """`choices[i].logprobs` of the legacy completions API (parallel lists)."""
    if completion.logprobs is None:
        return None
    tokens = [token_text(t) for t in completion.token_ids]
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {"tokens": tokens, "token_logprobs": completion.logprobs,
            "top_logprobs": [{token_text(t): v for t, v in completion.top_logprobs[i][:top]}
                             for i in range(len(tokens))],
            "text_offset": offsets}
