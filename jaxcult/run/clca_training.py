"""The CLCA train stage for one culture: `jaxcult train` on its views, then a PEFT export.

The training config is the user's run YAML with the data pointed at the culture's views
(`data.name=chat_jsonl`, `data.manual_dir=<out>/data/<culture>`); its outputs go to
`<out>/adapters/<training config's file stem>/<culture>/{run,peft}`, so one set of
conversations can train several base models. A finished run (summary.json
present) is not trained again; an interrupted one resumes from its checkpoint, provided its
config is unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxcult.config_clca import ClcaTrainConfig
from jaxcult.config_loading import dump_config, load_config
from jaxcult.errors import UserError
from jaxcult.run.clca_pipeline import Pipeline
from jaxcult.rundir import RunDir, check_writable


def training_config(pipeline: Pipeline, culture: str, settings: ClcaTrainConfig):
    data = (pipeline.out / "data" / culture).resolve()
    config = load_config(pipeline.path(settings.config), [
        *settings.overrides, "data.name=chat_jsonl", f"data.manual_dir={data}",
        f"name={pipeline.config.name}-{culture}", "task.name=causal_lm"])
    if settings.export and config.peft.kind != "lora":
        raise UserError(f"{pipeline.path(settings.config)}: peft.kind={config.peft.kind!r}, but "
                        f"train.export writes PEFT LoRA adapters; use peft.kind=lora or set "
                        f"train.export=false")
    return config


def _check_chat_template(source: str) -> None:
    from jaxcult.hub.pretrained import load_tokenizer

    tokenizer = load_tokenizer(source)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{source}: the tokenizer has no chat template; CLCA trains on chats "
                        f"(give model.tokenizer a chat model's tokenizer)")


def train_culture(pipeline: Pipeline, culture: str, settings: ClcaTrainConfig) -> dict:
    from jaxcult.run.export import export_run
    from jaxcult.run.train import train

    config = training_config(pipeline, culture, settings)
    folder = pipeline.out / "adapters" / Path(settings.config).stem / culture
    run = RunDir(folder / "run")
    if not run.summary.exists():
        _check_chat_template(config.model.tokenizer or config.model.name)
        resume = run.config.exists()
        if resume and run.config.read_text(encoding="utf-8") != dump_config(config):
            raise UserError(f"{run.config}: an unfinished run with another config; delete "
                            f"{run.root} to train it again with the current one")
        check_writable(run.root, overwrite=False, resume=resume)
        print(f"clca train: {culture} -> {run.root}", file=sys.stderr, flush=True)
        train(config, run, resume=resume)
    facts = {"run": str(run.root), **_scores(run)}
    if settings.export:
        peft = folder / "peft"
        if not (peft / "adapter_config.json").exists():
            export_run(run.root, "peft", peft, overwrite=peft.exists())
        facts["adapter"] = str(peft)
    return facts


def _scores(run: RunDir) -> dict:
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    metrics = summary.get("metrics", {})
    return {"validation": {lang: {k: round(v, 4) for k, v in values.items()
                                  if isinstance(v, int | float)}
                           for lang, values in metrics.items()}}
