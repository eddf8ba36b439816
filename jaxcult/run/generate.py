"""`jaxcult generate MODEL --prompts FILE.jsonl --out FILE.jsonl`: batched generation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import ValidationError

from jaxcult.config import GenerationConfig
from jaxcult.config_loading import COMMAND_LINE, describe_error, parse_override
from jaxcult.errors import UserError

log = logging.getLogger(__name__)


def generation_config(overrides: list[str]) -> GenerationConfig:
    """GenerationConfig from `key=value` overrides (values read as YAML), with one-line errors."""
    tree, sources = {}, {}
    for text in overrides:
        tree.update(parse_override(text))
        sources[text.partition("=")[0]] = f"{COMMAND_LINE} {text!r}"
    try:
        return GenerationConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(describe_error(exc.errors()[0], sources, GenerationConfig)) from None


def load_generation_model(source: str, adapter: str | None, merge: bool):
    """(model, tokenizer) of a model source, with a PEFT LoRA adapter attached (or merged)."""
    from jaxcult.hub.peft_format import import_peft
    from jaxcult.hub.pretrained import load_pretrained
    from jaxcult.peft.lora import merge as merge_lora

    model, tokenizer = load_pretrained(source)
    if tokenizer is None:
        raise UserError(f"{source}: no tokenizer to read prompts with")
    if adapter is not None:
        import_peft(model, Path(adapter))
        if merge:
            merge_lora(model)
    return model, tokenizer


def generate_command(model: str, prompts: Path, out: Path, overrides: list[str], *,
                     chat: bool = False, system: str | None = None, adapter: str | None = None,
                     merge: bool = False) -> dict:
    """Generate a completion for every prompt of `prompts` into `out` (resumable)."""
    from jaxcult.generation.engine import Generator
    from jaxcult.generation.files import generate_file, read_records
    from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults

    config = generation_config(overrides)
    read_records(prompts)  # an empty or missing prompt file fails before the model loads
    if out.parent and not out.parent.exists():
        raise UserError(f"{out.parent}: output folder does not exist")
    loaded, tokenizer = load_generation_model(model, adapter, merge)
    generator = Generator(loaded, tokenizer, with_model_defaults(config, load_generation_defaults(model)))
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        log.info(f"generate: {done}/{total} prompts ({rate:.2f}/s)")

    return generate_file(generator, prompts, out, chat=chat, system=system, on_progress=progress)
