"""A task family, dataset and evaluator from outside the package, named by import path in a
YAML config, train and evaluate end to end through `jaxcult train` (no edit of jaxcult/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import needs_minilm, tiny_model_yaml

PLUGINS = Path(__file__).resolve().parent / "plugins"


@needs_minilm
def test_user_task_dataset_and_evaluator_train_through_the_cli(tmp_path):
    (tmp_path / "toy.yaml").write_text("name: toy\n" + tiny_model_yaml(max_length=12) + """\
task: {name: "toy_tagging:TokenTagging", evaluator: "toy_tagging:TagAccuracy"}
data: {name: "toy_tagging:NumberWords", options: {sentences: 96}, max_eval_examples: 32,
       length_buckets: [6, 8]}
peft: {kind: pfeiffer, reduction_factor: 4}
optimizer: {lr: 0.01}
trainer: {batch_size: 16, eval_batch_size: 16, steps: 40, eval_every: 20, log_every: 10}
schedule: {name: gu, k: 10}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
""")
    env = dict(os.environ, PYTHONPATH=f"{PLUGINS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train", "toy.yaml",
                             "--run-dir", "run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "toy_tagging:TokenTagging"
    assert summary["dataset"] == "toy_tagging:NumberWords"
    assert summary["evaluator"] == "toy_tagging:TagAccuracy"
    assert summary["primary_metric"] == "word_accuracy" and summary["best_step"] in (20, 40)
    assert set(summary["metrics"]) == {"en", "de"}
    english = summary["metrics"]["en"]
    assert english["word_accuracy"] > 0.8          # the number words are learned
    assert set(english["by_tag"]) == {"other", "number"}   # nested metrics are kept
    assert set(summary["average_excluding_source"]) == {"word_accuracy"}  # only numbers averaged
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == [0, 10]  # gradual unfreezing of the 2 layers
    assert "word_accuracy" in result.stdout


@needs_minilm
def test_unknown_plugin_options_and_paths_are_clear_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PLUGINS))
    base = [sys.executable, "-m", "jaxcult.cli", "train", "--run-dir", "run"]

    def error(*overrides: str) -> str:
        result = subprocess.run([*base, *overrides], cwd=tmp_path, env=env, capture_output=True,
                                text=True)
        assert result.returncode == 2, result.stderr
        return result.stderr.strip().splitlines()[-1]  # after the "run directory:" notice

    assert error("task.name=no_such_module:Task") == (
        "error: task.name: cannot import module 'no_such_module' (No module named "
        "'no_such_module')")
    assert "has no attribute 'Missing'" in error("data.name=toy_tagging:Missing")
    assert "is not a jaxcult dataset" in error("data.name=toy_tagging:TokenTagging")
    assert "did you mean 'classification'" in error("task.name=clasification")
    assert "has no option 'size'" in error("data.name=toy_tagging:NumberWords", "data.options.size=3")
    assert not (tmp_path / "run").exists()
