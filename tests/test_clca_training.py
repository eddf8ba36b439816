"""The CLCA train stage on a tiny random chat model: one LoRA adapter per culture trained on
the views, exported in PEFT format, not retrained when finished, and evaluated by the survey
evaluator (CLCA §5) through `--adapter`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from test_clca import SCENARIOS, Scripted, scripted_everything

from jaxcult.data.survey_synthetic import write_synthetic_worldvaluesbench
from jaxcult.errors import UserError
from jaxcult.recipes.clca import run_stages
from jaxcult.run.survey import survey_command

pytest.importorskip("transformers")


def test_clca_adapter_trains_exports_and_feeds_the_survey_evaluator(tiny_chat_model, tmp_path,
                                                                   capsys):
    root = tiny_chat_model[0]
    train = tmp_path / "tiny-train.yaml"
    train.write_text(yaml.safe_dump({
        "task": {"name": "causal_lm"}, "model": {"name": str(root), "max_length": 1024},
        "peft": {"kind": "lora", "lora_r": 4, "lora_alpha": 8.0, "lora_dropout": 0.5},
        "data": {"eval_split": "validation"}, "schedule": {"name": "standard"},
        "optimizer": {"lr": 0.05}, "trainer": {"steps": 6, "batch_size": 2, "eval_batch_size": 8},
        "logging": {"tensorboard": False, "progress": "off"},
        "checkpoint": {"async_save": False}}))
    config = tmp_path / "clca.yaml"
    config.write_text(yaml.safe_dump({
        "scenarios": str(SCENARIOS), "cultures": ["japan"], "scenarios_per_culture": 3,
        "simulate": {"max_turns": 2, "samples": 1}, "train": {"config": str(train)}}))
    out, models = tmp_path / "out", {"smollm2-135m-instruct": Scripted(scripted_everything)}
    for stage in ("simulate", "judge", "annotate", "build", "train"):
        run_stages(config, [], stage, out, models)
    summary = json.loads((out / "summary.json").read_text())["train"]["japan"]
    adapter = out / "adapters" / "tiny-train" / "japan" / "peft"
    assert summary["adapter"] == str(adapter) and (adapter / "adapter_config.json").exists()
    assert np.isfinite(summary["validation"]["en"]["loss"])
    run_summary = json.loads((out / "adapters/tiny-train/japan/run/summary.json").read_text())
    # the test split is the validation split: its best-step scores are reused, not recomputed
    assert run_summary["metrics"]["en"] == run_summary["best_validation"]
    assert "evaluated en: its split is the validation split" in capsys.readouterr().err
    finished = (out / "adapters/tiny-train/japan/run/summary.json").stat().st_mtime_ns
    run_stages(config, [], "train", out, models)               # done: not trained again
    assert (out / "adapters/tiny-train/japan/run/summary.json").stat().st_mtime_ns == finished
    run_stages(config, ["build.intent_layout=utterance"], "build", out, models)
    with pytest.raises(UserError, match=r"japan/run: made with other settings "
                       r"\(data/train\.jsonl, data/validation\.jsonl differ"):
        run_stages(config, ["build.intent_layout=utterance"], "train", out, models)
    assert (out / "adapters/tiny-train/japan/run/summary.json").stat().st_mtime_ns == finished
    run_stages(config, [], "build", out, models)   # the views it was trained on: reused again
    run_stages(config, [], "train", out, models)

    survey = write_synthetic_worldvaluesbench(tmp_path / "wvb", ("Japan",), respondents=6, seed=1)
    settings = ["length_buckets=[512,1024]", "batch_size=8"]
    scores = {name: survey_command(str(root), survey, ["Japan"], tmp_path / name, settings,
                                   personas=2, mode="logprob", questions=["Q1", "Q2", "Q3"],
                                   adapter=str(adapter) if name == "adapted" else None)
              for name in ("adapted", "base")}
    adapted, base = (scores[n]["cultures"]["Japan"] for n in ("adapted", "base"))
    assert np.isfinite(adapted["kl_official"]) and adapted["parse_failure_rate"] == 0
    assert adapted["kl_official"] != pytest.approx(base["kl_official"], abs=1e-6)  # answers change
