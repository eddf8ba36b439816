"""The models a recipe's stages load, each once: generation models per (model, adapter), and
chat models (local, or clients of remote ones) per model spec."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jaxcult.remote.settings import ModelSpec, RemoteModel, model_label

log = logging.getLogger(__name__)


class LoadedModels:
    """(model, tokenizer) by asset name or folder, a PEFT adapter attached when given; models
    passed in (tests) are used as they are."""

    def __init__(self, recipe: str, models: dict[str, tuple[Any, Any]] | None = None,
                 chats: dict[str, Any] | None = None) -> None:
        self.recipe = recipe
        self.models: dict[str, tuple[Any, Any]] = dict(models or {})
        self.chats: dict[str, Any] = dict(chats or {})

    @staticmethod
    def key(name: str, adapter: Path | None) -> str:
        return f"{name}+{adapter}" if adapter else name

    def get(self, name: str, adapter: Path | None = None) -> tuple[Any, Any]:
        key = self.key(name, adapter)
        if key not in self.models:
            from jaxcult.run.generate import load_generation_model

            log.info(f"{self.recipe}: loading {key}")
            self.models[key] = load_generation_model(name, str(adapter) if adapter else None,
                                                     merge=False)
        return self.models[key]

    def forget(self, name: str, adapter: Path | None = None) -> None:
        """Drop a model no stage needs again (an adapter's own copy of the base)."""
        self.models.pop(self.key(name, adapter), None)

    def chat(self, spec: ModelSpec, remote_cache: Path):
        """The chat model a stage names (`generation.chat.ChatModel`): loaded once, or a client
        of a remote one whose answers are kept in `remote_cache`."""
        key = spec if isinstance(spec, str) else json.dumps(model_label(spec), sort_keys=True)
        if key not in self.chats:
            if isinstance(spec, RemoteModel):
                from jaxcult.remote.chat_model import RemoteChatModel

                log.info(f"{self.recipe}: {spec.model} at {spec.endpoint}")
                self.chats[key] = RemoteChatModel(spec, remote_cache)
            else:
                from jaxcult.generation.chat import EngineChatModel
                from jaxcult.generation.model_defaults import load_generation_defaults

                loaded, tokenizer = self.get(spec)
                self.chats[key] = EngineChatModel(spec, loaded, tokenizer,
                                                  load_generation_defaults(spec))
        return self.chats[key]
