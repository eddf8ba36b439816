"""Reading a Hugging Face model directory without torch: config.json, safetensors, tokenizer."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from jaxcult.errors import UserError


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.exists():
        raise UserError(f"{directory}: not a Hugging Face model directory (no config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: invalid JSON ({err})") from None


class SafetensorsCheckpoint(Mapping[str, np.ndarray]):
    """Lazy name -> numpy view of one `model.safetensors` or a sharded index."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        single = directory / "model.safetensors"
        index = directory / "model.safetensors.index.json"
        if single.exists():
            files = {None: single}
        elif index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise UserError(f"{index}: not a safetensors index ({err})") from None
            files = {name: directory / shard for name, shard in weight_map.items()}
        else:
            raise UserError(f"{directory}: no model.safetensors or model.safetensors.index.json")
        self._handles: dict[Path, object] = {}
        self._where: dict[str, Path] = {}
        for path in sorted(set(files.values()), key=str):
            if not path.exists():
                raise UserError(f"{path}: shard listed in the index is missing")
            try:
                handle = safe_open(str(path), framework="numpy")
                keys = list(handle.keys())
            except Exception as err:  # safetensors raises its own error types
                raise UserError(f"{path}: unreadable safetensors file ({err})") from None
            self._handles[path] = handle
            for key in keys:
                self._where[key] = path

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._where[name]
        try:
            return self._handles[path].get_tensor(name)
        except Exception as err:
            raise UserError(f"{path}: tensor {name!r} cannot be read ({err})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def load_tokenizer(directory: Path):
    """A transformers fast tokenizer from `tokenizer.json` (+ tokenizer_config.json if present)."""
    if not (directory / "tokenizer.json").exists():
        return None
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (directory / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
