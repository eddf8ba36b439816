"""The CLCA train stage for one culture: `jaxcult train` on its views, then a PEFT export.

The training config is the user's run YAML with the data pointed at the culture's views
(`data.name=chat_jsonl`, `data.manual_dir=<out>/data/<culture>`); its outputs go to
`<out>/adapters/<training config's file stem>/<culture>/{run,peft}`, so one set of
conversations can train several base models (`recipes.adapters` trains and resumes). An
adapter trained on other data (the views rebuilt since) is refused, never reused.
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.recipes.adapters import check_lora_export, data_provenance, train_adapter
from jaxcult.recipes.clca.config import AdapterTrainConfig
from jaxcult.recipes.clca.pipeline import Pipeline
from jaxcult.recipes.stage_files import check_provenance


def training_config(pipeline: Pipeline, culture: str, settings: AdapterTrainConfig):
    data = (pipeline.out / "data" / culture).resolve()
    config = load_config(pipeline.path(settings.config), [
        *settings.overrides, "data.name=chat_jsonl", f"data.manual_dir={data}",
        f"name={pipeline.config.name}-{culture}", "task.name=causal_lm"])
    check_lora_export(config, settings.export, pipeline.path(settings.config))
    return config


def _check_chat_template(source: str) -> None:
    from jaxcult.hub.pretrained import load_tokenizer

    tokenizer = load_tokenizer(source)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{source}: the tokenizer has no chat template; CLCA trains on chats "
                        f"(give model.tokenizer a chat model's tokenizer)")


def train_culture(pipeline: Pipeline, culture: str, settings: AdapterTrainConfig) -> dict:
    config = training_config(pipeline, culture, settings)
    folder = pipeline.out / "adapters" / Path(settings.config).stem / culture
    check_provenance(folder / "run", data_provenance(pipeline.out / "data" / culture))
    return train_adapter(config, folder, settings.export, f"clca {culture}",
                         lambda: _check_chat_template(config.model.tokenizer or config.model.name))
