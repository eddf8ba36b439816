"""`jaxcult export` and `jaxcult convert`: a run's adapters, or a model, in foreign formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcult.config import RunConfig, TaskConfig
from jaxcult.errors import UserError
from jaxcult.run.restore import check_settled, load_run_model, run_config
from jaxcult.rundir import RunDir, ensure_writable_dir
from jaxcult.tasks import Task, resolve_task

JAXCULT_HEAD = "jaxcult_head.safetensors"


def _check_output(out: Path, overwrite: bool) -> None:
    """Checked before any weights load: a folder we may write into."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out must be a folder, and this is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output directory is not empty; pass --overwrite to replace files")
    ensure_writable_dir(out, "output directory")


def _check_format(config: RunConfig, run_dir: Path, fmt: str, no_head: bool) -> Task:
    """Everything that makes an export impossible, found before any weights load; returns the
    run's task family (it decides whether the format holds its head)."""
    from jaxcult.peft.bottleneck import PLACEMENTS

    if fmt == "adapterhub" and config.peft.kind not in PLACEMENTS:
        raise UserError(f"export --format adapterhub: {run_dir} trained peft.kind="
                        f"{config.peft.kind!r}; AdapterHub's format holds bottleneck adapters "
                        f"({', '.join(PLACEMENTS)})")
    if fmt == "peft" and config.peft.kind != "lora":
        raise UserError(f"export --format peft: {run_dir} trained peft.kind="
                        f"{config.peft.kind!r}; the PEFT format holds LoRA adapters only")
    task = resolve_task(config.task)
    if task.adds_head and not no_head and fmt not in task.head_formats():
        raise UserError(f"export --format {fmt}: {run_dir} trained the head of task "
                        f"{task.name!r} as configured ({_described(task)}), which {fmt}'s files "
                        f"cannot hold; pass --no-head to export the adapters alone (the head "
                        f"is then written beside them in jaxcult's format, {JAXCULT_HEAD})")
    if no_head and not task.adds_head:
        raise UserError(f"export --no-head: task {task.name!r} adds no head to the model")
    return task


def _described(task: Task) -> str:
    """The task's own settings, for a message (`pooling: mean, head: jaxcult`)."""
    own = task.settings.own_settings(TaskConfig)
    return ", ".join(f"{k}: {v}" for k, v in own.items()) or "its only form"


def save_head(model, out: Path, task: Task) -> Path:
    """The task head's parameters (jaxcult paths) and the task's settings, as safetensors."""
    from safetensors.numpy import save_file

    head = {".".join(map(str, path)): np.asarray(v[...], np.float32)
            for path, v in nnx.to_flat_state(nnx.state(model.head, nnx.Param))}
    save_file(head, str(out / JAXCULT_HEAD), metadata={
        "task": task.name, "settings": json.dumps(task.settings.own_settings(TaskConfig)),
        "format": "jaxcult-head"})
    return out / JAXCULT_HEAD


def export_run(run_dir: Path, fmt: str, out: Path, *, name: str | None = None,
               overwrite: bool = False, no_head: bool = False, latest: bool = False) -> Path:
    """A run's best adapters as an AdapterHub directory (bottleneck; a masked-LM run's as a
    MAD-X language adapter with its invertible adapter and MLM head) or a PEFT one (LoRA), with
    the task's head where the format holds it (`--no-head`: beside them in jaxcult's format);
    a run still training is refused unless `latest` (`--latest-checkpoint`)."""
    check_settled(RunDir(run_dir), latest)
    _check_output(out, overwrite)
    task = _check_format(run_config(RunDir(run_dir)), run_dir, fmt, no_head)
    config, model = load_run_model(run_dir)
    name = name or config.name
    if fmt == "adapterhub":
        from jaxcult.hub.adapterhub import export_adapterhub

        head = task.export_head(model, fmt, name) if task.adds_head and not no_head else None
        export_adapterhub(model, out, name=name, which=task.exported_adapters, head=head,
                          slot="task")
    else:
        from jaxcult.hub.peft_format import export_peft
        from jaxcult.peft.lora import saved_modules

        backbone = getattr(model, "encoder", model)
        export_peft(backbone, out, alpha=config.peft.lora_alpha, dropout=config.peft.lora_dropout,
                    base_model=config.model.name,
                    saved=saved_modules(backbone, config.peft.modules_to_save))
    if no_head:
        save_head(model, out, task)
    return out


def convert_model(source: str, out: Path, *, overwrite: bool = False) -> Path:
    """Any loadable model (asset, HF dir, GGUF, E5S1) as an HF directory transformers reads."""
    from jaxcult.hub.export import save_pretrained
    from jaxcult.hub.pretrained import load_pretrained

    _check_output(out, overwrite)
    model, tokenizer = load_pretrained(source)
    return save_pretrained(model, out, tokenizer=tokenizer)
