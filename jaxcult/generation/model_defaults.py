"""A model's own decoding defaults (its `generation_config.json`) under a config's settings.

transformers' `generate` starts from the sampling settings a checkpoint ships (Llama 3.x
Instruct: temperature 0.6, top-p 0.9; Qwen2.5 Instruct: repetition penalty 1.05, ...) and
overrides them with what the caller passes; so do the papers' official scripts. jaxcult does
the same: a sampling setting the config does not set takes the model's value. "Set" means
given in the config file or on the command line, or chosen by the section itself (a class
default that differs from `GenerationConfig`'s, e.g. CLCA role-play's top-p 0.7). `do_sample`
never comes from the model: whether a stage samples is the stage's protocol. transformers'
library-wide fallbacks (e.g. top-k 50 when sampling) are not applied: set them explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from jaxcult.config import GenerationConfig
from jaxcult.hub.pretrained import model_side_file
from jaxcult.own_files import read_json_object

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def chosen_fields(config: GenerationConfig) -> set[str]:
    """Fields the user or the config's section set (see the module docstring)."""
    base = GenerationConfig.model_fields
    own = type(config).model_fields
    by_section = {name for name in SAMPLING_KEYS
                  if own[name].get_default(call_default_factory=True)
                  != base[name].get_default(call_default_factory=True)}
    return set(config.model_fields_set) | by_section


def with_model_defaults(config: GenerationConfig, defaults: dict) -> GenerationConfig:
    """`config` with the model's `defaults` for the sampling settings it leaves unset."""
    chosen = chosen_fields(config)
    update = {k: v for k, v in defaults.items() if k in SAMPLING_KEYS and k not in chosen}
    if not update:
        return config
    return type(config).model_validate({**config.model_dump(), **update})


def load_generation_defaults(source: str | Path) -> dict:
    """The sampling settings a model ships in its `generation_config.json` (an HF directory or
    Hub snapshot; none for GGUF and E5S1 files). A value jaxcult cannot use (e.g. temperature
    0 next to do_sample false) is left out with a warning naming the file and key."""
    file = model_side_file(source, "generation_config.json")
    if file is None:
        return {}
    found = read_json_object(file)
    defaults = {}
    for key in SAMPLING_KEYS:
        if found.get(key) is None:
            continue
        try:
            GenerationConfig.model_validate({key: found[key]})
            defaults[key] = found[key]
        except ValidationError as error:
            log.warning(f"{file}: {key}={found[key]!r} left out ({error.errors()[0]['msg']})")
    return defaults
