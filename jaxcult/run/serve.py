"""`jaxcult serve MODEL [--adapter [NAME=]DIR ...]`: an OpenAI-compatible HTTP server.

The base model is served under `--name` (default: MODEL as given) and each PEFT LoRA adapter
under its NAME (default: its folder's name); a request picks one with its `model` field. The
adapters share the base weights: each is the base module graph with its LoRA factors attached.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.run.generate import generation_config

log = logging.getLogger(__name__)

SERVE_DEFAULTS = {"batch_size": 16, "max_new_tokens": 256}
PER_REQUEST = {"do_sample": "temperature (0 = greedy)", "seed": "seed", "stop_strings": "stop"}


def adapter_names(adapters: list[str]) -> dict[str, Path]:
    """NAME -> folder for `--adapter [NAME=]DIR` arguments (names must differ)."""
    named: dict[str, Path] = {}
    for text in adapters:
        name, _, folder = text.rpartition("=") if "=" in text else ("", "", text)
        path = Path(folder)
        name = name or path.resolve().name
        if name in named:
            raise UserError(f"--adapter {text}: the name {name!r} is taken; write NAME=DIR")
        named[name] = path
    return named


def load_served_models(model: str, name: str, adapters: dict[str, Path]) -> dict:
    """name -> (model, tokenizer) for the base model and each adapter on it."""
    from flax import nnx

    from jaxcult.hub.peft_format import import_peft
    from jaxcult.run.generate import load_generation_model

    base, tokenizer = load_generation_model(model, None, merge=False)
    served = {name: (base, tokenizer)}
    for adapter, folder in adapters.items():
        if adapter in served:
            raise UserError(f"--adapter {adapter}: the name is the base model's; write NAME=DIR")
        attached = nnx.merge(*nnx.split(base))   # a new module graph on the same weights
        import_peft(attached, folder)
        served[adapter] = (attached, tokenizer)
    return served


def bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as error:
        raise UserError(f"--host {host} --port {port}: cannot listen ({error.strerror})") from None
    return sock


def serve_command(model: str, overrides: list[str], *, adapters: list[str], name: str | None,
                  host: str, port: int, gather_ms: float = 50.0) -> str:
    """Serve until interrupted; returns the line printed at exit."""
    import uvicorn

    from jaxcult.generation.model_defaults import SAMPLING_KEYS, load_generation_defaults
    from jaxcult.serving.app import Server
    from jaxcult.serving.scheduler import Scheduler

    if gather_ms < 0:
        raise UserError(f"--gather-ms {gather_ms}: must be >= 0")
    given = {o.partition("=")[0] for o in overrides}
    config = generation_config(
        [f"{k}={v}" for k, v in SERVE_DEFAULTS.items() if k not in given] + overrides)
    refused = sorted(given & set(PER_REQUEST))
    if refused:
        raise UserError(f"serve: {refused[0]} is chosen by each request (the API's "
                        f"{PER_REQUEST[refused[0]]}), not by the server")
    named = adapter_names(adapters)
    sock = bind(host, port)
    served = load_served_models(model, name or model, named)
    scheduler = Scheduler(served, config, gather_ms / 1000)
    # what a request leaves unset: the server's KEY=VALUE, else the model's own settings (the
    # adapters share the base model's)
    defaults = {**load_generation_defaults(model),
                **{k: getattr(config, k) for k in SAMPLING_KEYS if k in given}}
    where = f"http://{host}:{sock.getsockname()[1]}/v1"
    log.info(f"serve: {', '.join(served)} on {where} (batch {config.batch_size}, up to "
             f"{config.max_new_tokens} new tokens, prompts up to {max(config.length_buckets)})")
    server = uvicorn.Server(uvicorn.Config(Server(scheduler, dict.fromkeys(served, defaults)).app(),
                                           log_level="warning",
                                           timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        scheduler.close()
    return f"stopped serving {where}"
