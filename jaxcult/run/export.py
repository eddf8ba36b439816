"""`jaxcult export` and `jaxcult convert`: a run's adapters, or a model, in foreign formats."""

from __future__ import annotations

from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.run.restore import load_run_model


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output directory is not empty; pass --overwrite to replace files")


def export_run(run_dir: Path, fmt: str, out: Path, *, name: str | None = None,
               overwrite: bool = False) -> Path:
    """A run's best adapters as an AdapterHub directory (bottleneck) or a PEFT one (LoRA)."""
    _check_output(out, overwrite)
    config, model = load_run_model(run_dir)
    backbone = getattr(model, "encoder", model)
    if fmt == "adapterhub":
        from jaxcult.hub.adapterhub import export_adapterhub
        from jaxcult.peft.bottleneck import PLACEMENTS

        if config.peft.kind not in PLACEMENTS:
            raise UserError(f"export --format adapterhub: {run_dir} trained peft.kind="
                            f"{config.peft.kind!r}; AdapterHub's format holds bottleneck adapters "
                            f"({', '.join(PLACEMENTS)})")
        return export_adapterhub(model, out, name=name or config.name)
    from jaxcult.hub.peft_format import export_peft
    from jaxcult.peft.lora import saved_modules

    if config.peft.kind != "lora":
        raise UserError(f"export --format peft: {run_dir} trained peft.kind="
                        f"{config.peft.kind!r}; the PEFT format holds LoRA adapters only")
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
