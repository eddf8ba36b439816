"""What every knowledge-graph stage works with: the resolved config, its output folder, the
models and sentence encoders (each loaded once), and the recorded teacher replies if any."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError
from jaxcult.generation.chat import Reply
from jaxcult.recipes.cckg.config import ENGLISH, CckgConfig, EncoderConfig, MergeEncoderConfig
from jaxcult.recipes.loaded_models import LoadedModels


class Graphs:
    """A resolved knowledge-graph config, its output folder, models and sentence encoders."""

    def __init__(self, config: CckgConfig, root: Path, out: Path,
                 chats: dict[str, Any] | None = None, encoders: dict[str, Any] | None = None,
                 models: dict[str, tuple[Any, Any]] | None = None) -> None:
        self.config, self.root, self.out = config, root, out
        self.loaded = LoadedModels("cckg", models=models, chats=chats)
        self.encoders: dict[str, Any] = dict(encoders or {})
        self.vectors: dict[tuple[str, str], Any] = {}
        self._recorded: RecordedReplies | None = None
        self._students: dict[str, Any] = {}
        self._made: dict[tuple, Any] = {}

    def path(self, name: str) -> Path:
        """A file the config names, relative to the config."""
        return (self.root / name).resolve()

    def teacher(self):
        return self.loaded.chat(self.config.generate.teacher, self.out / "remote-cache.jsonl")

    def student(self, name: str, adapter: Path | None = None):
        """A student model as a chat model (`generation.chat.EngineChatModel`), with an
        adapter attached when given; loaded once."""
        from jaxcult.generation.chat import EngineChatModel
        from jaxcult.generation.model_defaults import load_generation_defaults

        key = LoadedModels.key(name, adapter)
        if key not in self._students:
            model, tokenizer = self.loaded.get(name, adapter)
            self._students[key] = EngineChatModel(key, model, tokenizer,
                                                  load_generation_defaults(name))
        return self._students[key]

    def once(self, key: tuple, make: Callable[[], Any]) -> Any:
        """`make()` the first time `key` is asked for, the same value after (files a stage
        reads many times, e.g. a graph's texts for every question batch)."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def forget(self, name: str, adapter: Path | None) -> None:
        """Drop an adapted copy no stage needs again."""
        self._students.pop(LoadedModels.key(name, adapter), None)
        self.loaded.forget(name, adapter)

    def recorded(self) -> RecordedReplies | None:
        if self.config.generate.recorded is None:
            return None
        if self._recorded is None:
            self._recorded = RecordedReplies(self.path(self.config.generate.recorded))
        return self._recorded

    def encoder_settings(self, language: str) -> MergeEncoderConfig:
        expand = self.config.expand
        return expand.english_encoder if language == ENGLISH else expand.native_encoder

    def embed(self, language: str, texts: list[str]):
        """Sentence embeddings of `texts` with the language's encoder."""
        return self.embed_with(self.encoder_settings(language), texts)

    def embed_with(self, settings: EncoderConfig, texts: list[str]):
        """Sentence embeddings of `texts` with the encoder `settings` names (each text once;
        an encoder passed in by name, in tests, is used as it is)."""
        from jaxcult.eval.sentence_embeddings import SentenceEncoder

        name = (settings.model if settings.model in self.encoders
                else f"{settings.model}|{settings.prefix}|{settings.max_length}")
        if name not in self.encoders:
            self.encoders[name] = SentenceEncoder.load(
                settings.model, prefix=settings.prefix, max_length=settings.max_length)
        encoder = self.encoders[name]
        todo = list(dict.fromkeys(t for t in texts if (name, t) not in self.vectors))
        if todo:
            self.vectors.update(((name, t), v) for t, v in zip(todo, encoder.encode(todo)))
        return np.stack([self.vectors[name, t] for t in texts])


def _recorded_reply(record: Any, where: str) -> tuple[str, dict]:
    if (not isinstance(record, dict) or record.get("stage") not in ("generate", "expand")
            or not isinstance(record.get("key"), list) or not isinstance(record.get("reply"), str)):
        raise UserError(f"{where}: expected {{stage: generate|expand, key: [...], reply: text}}")
    return where, record


class RecordedReplies:
    """Teacher replies written beforehand (`generate.recorded`): one JSON object per line,
    {"stage": "generate" | "expand", "key": [...], "reply": "..."}, the key as the stage's
    output records it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.replies: dict[tuple, str] = {}
        for where, record in read_checked_jsonl(path, _recorded_reply):
            found = (record["stage"], *record["key"])
            if found in self.replies:
                raise UserError(f"{where}: a second reply for {record['key']}")
            self.replies[found] = record["reply"]

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    def reply(self, stage: str, keys: list[tuple]) -> list[Reply]:
        missing = [k for k in keys if (stage, *k) not in self.replies]
        if missing:
            raise UserError(f"{self.path}: no {stage} reply for key {list(missing[0])} "
                            f"({len(missing)} missing); add them, or ask a teacher")
        return [Reply(self.replies[stage, *k]) for k in keys]
