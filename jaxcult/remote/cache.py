"""Answers of a remote model kept on disk, keyed by the request, so that a stage resumed after
an interruption (or rerun) never pays for a request twice.

One JSONL file of `{"key", "response"}` lines, appended one whole line per answer (a line torn
by a kill is ignored on the next start); the key is a hash of the endpoint and the request body,
which holds everything that changes the answer (model, messages, decoding settings, seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from jaxcult.rundir import append_whole, open_for_append


def request_key(endpoint: str, body: dict) -> str:
    text = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Thread-safe: the remote backend's workers add answers concurrently."""

    def __init__(self, path: Path) -> None:
        self.path, self._lock = path, threading.Lock()
        self._answers: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._answers[row["key"]] = row["response"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by an interruption

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict | None:
        return self._answers.get(key)

    def put(self, key: str, response: dict) -> None:
        line = json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n"
        with self._lock:
            self._answers[key] = response
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_for_append(self.path)
            try:
                append_whole(fd, line.encode("utf-8"), self.path)
            finally:
                os.close(fd)
