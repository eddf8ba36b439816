"""The HTTP side of `jaxcult serve`: a Starlette app with the OpenAI routes.

`/v1/chat/completions` and `/v1/completions` (streamed as server-sent events when asked),
`/v1/models`, and `/health`. Each handler validates and tokenises its request, hands the jobs to
the `Scheduler` and waits for their events on an asyncio queue; every error, a malformed body
included, is answered in the API's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jaxcult.errors import UserError
from jaxcult.generation.api import prompt_error
from jaxcult.generation.prompts import render_chat
from jaxcult.serving.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Job,
    chat_logprobs,
    completion_logprobs,
    finish_reason,
    parse,
    usage,
)
from jaxcult.serving.scheduler import Delta, Done, Failed, Scheduler

log = logging.getLogger(__name__)


class Server:
    """The routes over one scheduler (its models are what `/v1/models` lists)."""

    def __init__(self, scheduler: Scheduler, defaults: dict[str, dict] | None = None) -> None:
        """`defaults`: per served model, its own sampling settings (generation_config.json)
        for what a request leaves unset."""
        self.scheduler, self.defaults = scheduler, defaults or {}
        self.created = int(time.time())

    def app(self) -> Starlette:
        routes = [Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/completions", self.complete, methods=["POST"]),
                  Route("/v1/models", self.list_models, methods=["GET"]),
                  Route("/health", self.health, methods=["GET"])]
        return Starlette(routes=routes, lifespan=self._lifespan, exception_handlers={
            ApiError: self._api_error, Exception: self._internal_error,
            404: self._not_found, 405: self._not_allowed})

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app):
        yield
        sizes = self.scheduler.batch_sizes
        log.info(f"serve: stopped after {sum(sizes)} requests in {len(sizes)} batches"
                 + (f" ({sum(sizes) / len(sizes):.1f} per batch)" if sizes else ""))

    # errors -----------------------------------------------------------------------------------
    @staticmethod
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @staticmethod
    async def _internal_error(_request: Request, error: Exception) -> JSONResponse:
        log.exception("serve: request failed")
        return JSONResponse(ApiError(500, f"{type(error).__name__}: {error}",
                                     kind="server_error").body(), status_code=500)

    @staticmethod
    async def _not_found(request: Request, _error) -> JSONResponse:
        return JSONResponse(ApiError(404, f"no route {request.url.path}").body(), status_code=404)

    @staticmethod
    async def _not_allowed(request: Request, _error) -> JSONResponse:
        return JSONResponse(ApiError(405, f"{request.method} is not allowed on "
                                          f"{request.url.path}").body(), status_code=405)

    # routes -----------------------------------------------------------------------------------
    async def health(self, _request: Request) -> Response:
        return Response("ok")

    async def list_models(self, _request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "jaxcult"}
            for name in self.scheduler.models]})

    async def chat(self, request: Request) -> Response:
        body = parse(ChatRequest, await _json(request))
        tokenizer = self._tokenizer(body.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        text = _render(messages, tokenizer, body)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        top = body.top_logprobs or 0
        job = self._job(body, ids, body.max_completion_tokens or body.max_tokens,
                        top if body.logprobs else None)
        if body.stream:
            return _sse(self._chat_chunks(job, body, tokenizer, top))
        completion = await self._result(job)
        return JSONResponse({
            "id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": job.created,
            "model": body.model, "choices": [{
                "index": 0, "message": {"role": "assistant", "content": completion.text},
                "logprobs": chat_logprobs(completion, top, _token_text(tokenizer)),
                "finish_reason": finish_reason(completion)}],
            "usage": usage([completion])})

    async def complete(self, request: Request) -> Response:
        body = parse(CompletionRequest, await _json(request))
        tokenizer = self._tokenizer(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt: no prompts given", "prompt")
        if body.stream and len(prompts) > 1:
            raise ApiError(400, "stream=true takes one prompt", "prompt")
        top = body.logprobs
        jobs = [self._job(body, tokenizer(p)["input_ids"], body.max_tokens, top) for p in prompts]
        if body.stream:
            return _sse(self._completion_chunks(jobs[0], body, tokenizer, top or 0))
        completions = await asyncio.gather(*(self._result(job) for job in jobs))
        return JSONResponse({
            "id": f"cmpl-{jobs[0].id}", "object": "text_completion", "created": jobs[0].created,
            "model": body.model, "choices": [{
                "index": i, "text": c.text, "finish_reason": finish_reason(c),
                "logprobs": completion_logprobs(c, top or 0, _token_text(tokenizer))}
                for i, c in enumerate(completions)],
            "usage": usage(list(completions))})

    # helpers ----------------------------------------------------------------------------------
    def _tokenizer(self, model: str):
        if model not in self.scheduler.models:
            raise ApiError(404, f"model {model!r} is not served here (served: "
                                f"{', '.join(self.scheduler.models)})", "model",
                           code="model_not_found")
        return self.scheduler.models[model][1]

    def _job(self, body, ids: list[int], max_tokens: int | None, top: int | None) -> Job:
        config = self.scheduler.config
        error = prompt_error(len(ids), config.length_buckets)
        if error is not None:
            raise ApiError(400, error, "messages" if isinstance(body, ChatRequest) else "prompt",
                           code="context_length_exceeded")
        limit = max_tokens or config.max_new_tokens
        if limit > config.max_new_tokens:
            raise ApiError(400, f"max_tokens={limit} is more than this server's "
                                f"generation.max_new_tokens={config.max_new_tokens} (restart "
                                f"`jaxcult serve` with a larger one)", "max_tokens")
        return Job(body.model, ids, body.sampling(self.defaults.get(body.model, {})), limit,
                   body.stops(), top, body.seed, body.stream)

    def _events(self, job: Job) -> asyncio.Queue:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        self.scheduler.submit(job, lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        return queue

    async def _result(self, job: Job):
        queue = self._events(job)
        while True:
            event = await queue.get()
            if isinstance(event, Done):
                return event.completion
            if isinstance(event, Failed):
                raise ApiError(500, event.message, kind="server_error")

    async def _stream(self, job: Job) -> AsyncIterator[Delta | Done | Failed]:
        queue = self._events(job)
        while True:
            event = await queue.get()
            yield event
            if not isinstance(event, Delta):
                return

    async def _chat_chunks(self, job: Job, body: ChatRequest, tokenizer, top: int):
        def chunk(delta: dict, reason=None, logprobs=None) -> dict:
            return {"id": f"chatcmpl-{job.id}", "object": "chat.completion.chunk",
                    "created": job.created, "model": body.model, "choices": [
                        {"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": reason}]}

        yield chunk({"role": "assistant", "content": ""})
        async for event in self._stream(job):
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Failed):
                yield ApiError(500, event.message, kind="server_error").body()
            else:
                completion = event.completion
                yield chunk({}, finish_reason(completion),
                            chat_logprobs(completion, top, _token_text(tokenizer)))
                if body.stream_options and body.stream_options.include_usage:
                    yield {**chunk({}), "choices": [], "usage": usage([completion])}

    async def _completion_chunks(self, job: Job, body: CompletionRequest, tokenizer, top: int):
        def chunk(text: str, reason=None, logprobs=None) -> dict:
            return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": job.created,
                    "model": body.model, "choices": [
                        {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}]}

        async for event in self._stream(job):
            if isinstance(event, Delta):
                yield chunk(event.text)
            elif isinstance(event, Failed):
                yield ApiError(500, event.message, kind="server_error").body()
            else:
                completion = event.completion
                yield chunk("", finish_reason(completion),
                            completion_logprobs(completion, top, _token_text(tokenizer)))
                if body.stream_options and body.stream_options.include_usage:
                    yield {**chunk(""), "choices": [], "usage": usage([completion])}


async def _json(request: Request):
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the request body is not JSON ({error})") from None


def _render(messages: list[dict], tokenizer, body: ChatRequest) -> str:
    """The prompt text: the chat template, or with `continue_final_message` the conversation
    before the last (assistant) message with that message's text appended, so the reply
    continues it (what `jaxcult generate` does with an answer prefix)."""
    try:
        if body.continue_final_message:
            if messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise ApiError(400, "continue_final_message needs a final assistant message "
                                    "after the conversation", "messages")
            return render_chat(messages[:-1], tokenizer) + messages[-1]["content"]
        return render_chat(messages, tokenizer, add_generation_prompt=body.add_generation_prompt)
    except UserError as error:
        raise ApiError(400, str(error), "messages") from None


def _token_text(tokenizer):
    return lambda token: tokenizer.decode([token])


def _sse(chunks) -> StreamingResponse:
    async def lines():
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")
