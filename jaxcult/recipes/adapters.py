"""Train one culture's adapter with `jaxcult train` and export it to PEFT: the train stage
shared by the CLCA and Surveys→Narratives pipelines.

The run goes to `<folder>/run`, the PEFT adapter to `<folder>/peft`. A finished run
(summary.json present) is not trained again; an interrupted one resumes from its checkpoint;
either only when its config is unchanged (else an error: delete the run to retrain).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from jaxcult.config import RunConfig, Section
from jaxcult.config_loading import same_config
from jaxcult.errors import UserError
from jaxcult.own_files import read_json_object
from jaxcult.report import SUMMARY_KEYS
from jaxcult.rundir import RunDir, check_writable, has_checkpoint

log = logging.getLogger(__name__)


class AdapterTrainConfig(Section):
    """One LoRA adapter per culture: `jaxcult train` on the culture's training data (CLCA and
    Surveys→Narratives pipelines)."""

    config: str = Field(..., description="the training run's YAML (a jaxcult train config)")
    overrides: list[str] = Field(default_factory=list, description="dotted overrides for it")
    export: bool = Field(True, description="also write the adapter in PEFT format")


def check_lora_export(config: RunConfig, export: bool, where: Path) -> None:
    if export and config.peft.kind != "lora":
        raise UserError(f"{where}: peft.kind={config.peft.kind!r}, but train.export writes PEFT "
                        f"LoRA adapters; use peft.kind=lora or set train.export=false")


def data_provenance(data: Path) -> dict:
    """What an adapter was trained on: the digest of each data file in its folder (a rebuild
    with other settings, or from other records, changes them)."""
    return {f"data/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.glob("*.jsonl"))}


def train_adapter(config: RunConfig, folder: Path, export: bool, label: str,
                  before: Callable[[], None] | None = None) -> dict:
    """Train (or resume, or skip when finished) the run in `folder/run`; export it to
    `folder/peft` when `export`. `before` runs checks that only matter when training starts.
    Returns the run's folder, validation metrics and adapter folder."""
    from jaxcult.run.export import export_run
    from jaxcult.run.train import train

    run = RunDir(folder / "run")
    if run.summary.exists() and not same_config(run.config, config):
        raise UserError(f"{run.config}: a finished run with another config; delete {run.root} "
                        f"to train it again with the current one")
    if not run.summary.exists():
        if before is not None:
            before()
        started = run.config.exists()
        if started and not same_config(run.config, config):
            raise UserError(f"{run.config}: an unfinished run with another config; delete "
                            f"{run.root} to train it again with the current one")
        resume = started and has_checkpoint(run)  # stopped before its first checkpoint: anew
        check_writable(run.root, overwrite=started and not resume, resume=resume)
        log.info(f"train: {label} -> {run.root}")
        train(config, run, resume=resume, overwrite=started and not resume)
    facts = {"run": str(run.root), **_scores(run)}
    if export:
        peft = folder / "peft"
        if not (peft / "adapter_config.json").exists():
            export_run(run.root, "peft", peft, overwrite=peft.exists())
        facts["adapter"] = str(peft)
    return facts


def _scores(run: RunDir) -> dict:
    summary = read_json_object(run.summary, SUMMARY_KEYS)
    metrics = summary.get("metrics", {})
    return {"validation": {lang: {k: round(v, 4) for k, v in values.items()
                                  if isinstance(v, int | float)}
                           for lang, values in metrics.items()}}
