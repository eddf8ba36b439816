"""`save_pretrained(model, dir)`: write an HF directory (config.json + model.safetensors) that
transformers loads, using the same key tables as import; `ExportedHead`, a task head as a
foreign format holds it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxcult import models

_JAXCULT_ONLY = {"dtype", "param_dtype", "add_pooler"}


@dataclass(frozen=True)
class ExportedHead:
    """A task head in a foreign format (`Task.export_head`): the config the format describes
    it with, and its tensors by the format's names (torch layout)."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]


def hf_config(config) -> dict:
    """The `config.json` transformers reads for a jaxcult architecture config."""
    every = config.to_hf() if hasattr(config, "to_hf") else dataclasses.asdict(config)
    fields = {k: v for k, v in every.items() if k not in _JAXCULT_ONLY}
    fields["architectures"] = [models.architecture_of(config).hf_classes[config.model_type]]
    fields["torch_dtype"] = config.param_dtype
    return {k: v for k, v in fields.items() if v is not None}


def save_pretrained(model: nnx.Module, directory: str | Path, tokenizer=None) -> Path:
    """Write `config.json`, `model.safetensors` (torch layout) and the tokenizer if given."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    architecture = models.architecture_of(config)
    tensors: dict[str, np.ndarray] = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = ".".join(str(p) for p in path)
        found = architecture.hf_name(key)
        if found is None:
            raise ValueError(f"parameter {key} has no Hugging Face name (adapters are exported "
                             f"with `jaxcult export`, not with the base model)")
        name, transpose = found
        array = np.asarray(variable[...], dtype=np.float32)
        tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory
