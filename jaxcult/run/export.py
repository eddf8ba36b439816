"""`jaxcult export` and `jaxcult convert`: a run's adapters, or a model, in foreign formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from jaxcult.config import RunConfig
from jaxcult.errors import UserError
from jaxcult.run.restore import load_run_model, run_config
from jaxcult.rundir import RunDir, ensure_writable_dir

JAXCULT_HEAD = "jaxcult_head.safetensors"


def _check_output(out: Path, overwrite: bool) -> None:
    """Checked before any weights load: a folder we may write into."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out must be a folder, and this is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output directory is not empty; pass --overwrite to replace files")
    ensure_writable_dir(out, "output directory")


def _check_format(config: RunConfig, run_dir: Path, fmt: str, no_head: bool) -> None:
    """Everything that makes an export impossible, found before any weights load."""
    from jaxcult.peft.bottleneck import PLACEMENTS

    if fmt == "adapterhub":
        if config.peft.kind not in PLACEMENTS:
            raise UserError(f"export --format adapterhub: {run_dir} trained peft.kind="
                            f"{config.peft.kind!r}; AdapterHub's format holds bottleneck adapters "
                            f"({', '.join(PLACEMENTS)})")
        pooled = config.task.name in ("classification", "pair_classification", "multiple_choice")
        if pooled and config.task.head == "hf" and not no_head:
            raise UserError(f"export --format adapterhub: {run_dir} trained transformers' head "
                            f"(task.head=hf), which AdapterHub's head format does not hold; pass "
                            f"--no-head to export the adapters alone (the head is then written "
                            f"beside them in jaxcult's format, {JAXCULT_HEAD})")
        if pooled and config.model.pooling != "cls" and not no_head:
            raise UserError(f"export --format adapterhub: {run_dir} trained a head pooling by "
                            f"{config.model.pooling!r}, but AdapterHub's heads read the first "
                            f"token; pass --no-head to export the adapters alone (the head is "
                            f"then written beside them in jaxcult's format, {JAXCULT_HEAD})")
    elif config.peft.kind != "lora":
        raise UserError(f"export --format peft: {run_dir} trained peft.kind="
                        f"{config.peft.kind!r}; the PEFT format holds LoRA adapters only")
    elif no_head:
        raise UserError("export --no-head: only with --format adapterhub (PEFT exports hold no head)")


def save_head(model, out: Path, config: RunConfig) -> Path:
    """The task head's parameters (jaxcult paths) and how it pools, as safetensors."""
    from safetensors.numpy import save_file

    head = {".".join(map(str, path)): np.asarray(v[...], np.float32)
            for path, v in nnx.to_flat_state(nnx.state(model.head, nnx.Param))}
    save_file(head, str(out / JAXCULT_HEAD), metadata={
        "pooling": config.model.pooling, "task": config.task.name, "format": "jaxcult-head"})
    return out / JAXCULT_HEAD


def export_run(run_dir: Path, fmt: str, out: Path, *, name: str | None = None,
               overwrite: bool = False, no_head: bool = False) -> Path:
    """A run's best adapters as an AdapterHub directory (bottleneck; a masked-LM run's as a
    MAD-X language adapter with its invertible adapter and MLM head) or a PEFT one (LoRA)."""
    _check_output(out, overwrite)
    _check_format(run_config(RunDir(run_dir)), run_dir, fmt, no_head)
    config, model = load_run_model(run_dir)
    backbone = getattr(model, "encoder", model)
    if fmt == "adapterhub":
        from jaxcult.hub.adapterhub import export_adapterhub

        # a masked-LM run trained a language adapter (MAD-X): its bottleneck adapters sit in
        # the task slot and its invertible adapter (peft.invertible) goes with them
        which = "language" if config.task.name == "masked_lm" else "task"
        export_adapterhub(model, out, name=name or config.name, with_head=not no_head,
                          which=which, slot="task")
        if no_head and hasattr(model, "head"):
            save_head(model, out, config)
        return out
    from jaxcult.hub.peft_format import export_peft
    from jaxcult.peft.lora import saved_modules

    return export_peft(backbone, out, alpha=config.peft.lora_alpha, dropout=config.peft.lora_dropout,
                       base_model=config.model.name,
                       saved=saved_modules(backbone, config.peft.modules_to_save))


def convert_model(source: str, out: Path, *, overwrite: bool = False) -> Path:
    """Any loadable model (asset, HF dir, GGUF, E5S1) as an HF directory transformers reads."""
    from jaxcult.hub.export import save_pretrained
    from jaxcult.hub.pretrained import load_pretrained

    _check_output(out, overwrite)
    model, tokenizer = load_pretrained(source)
    return save_pretrained(model, out, tokenizer=tokenizer)
