"""A task family, dataset and evaluator from outside the package, named by import path in a
YAML config, train and evaluate end to end through `jaxcult train` (no edit of jaxcult/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import needs_minilm, tiny_model_yaml

PLUGINS = Path(__file__).resolve().parent / "plugins"


def _jaxcult(capsys, *args: str) -> tuple[int, str, str]:
    """`jaxcult ARGS` in this process: (exit code, stdout, stderr)."""
    from jaxcult.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


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
def test_unknown_plugin_options_and_paths_are_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.chdir(tmp_path)

    def error(*overrides: str) -> str:
        code, _, err = _jaxcult(capsys, "train", "--run-dir", "run", *overrides)
        assert code == 2, err
        return err.strip().splitlines()[-1]

    assert error("task.name=no_such_module:Task") == (
        "error: task.name: cannot import module 'no_such_module' (No module named "
        "'no_such_module')")
    assert "has no attribute 'Missing'" in error("data.name=toy_tagging:Missing")
    assert "is not a jaxcult dataset" in error("data.name=toy_tagging:TokenTagging")
    assert "did you mean 'classification'" in error("task.name=clasification")
    assert error("data.name=toy_tagging:NumberWords", "data.size=3").endswith(
        "unknown key 'data.size' of dataset 'toy_tagging:NumberWords' (its own keys: sentences)")
    assert "data.sentences: expected greater than 0, found 0" in error(
        "data.name=toy_tagging:NumberWords", "data.sentences=0")
    assert not (tmp_path / "run").exists()


TOPICS = """\
name: smooth
data: {name: jaxcult_multilingual, target_languages: [de], max_train_examples: 64,
       max_eval_examples: 32}
peft: {kind: pfeiffer, reduction_factor: 4}
optimizer: {lr: 0.01}
trainer: {batch_size: 8, eval_batch_size: 32, steps: 4, eval_every: 2, log_every: 2}
schedule: {name: standard}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
task:
  name: "smoothed_topics:SmoothedClassification"
  pooling: cls
  label_smoothing: 0.1
  evaluators: [accuracy, {name: "smoothed_topics:ClassRecall", label: food, report_as: food}]
"""


@needs_minilm
def test_typed_plugin_settings_two_evaluators_and_the_head_in_exports(tmp_path, monkeypatch,
                                                                       capsys):
    """An outside pooled task with a typed option and an outside evaluator with options, beside
    a built-in one: the settings take effect, unknown keys are refused naming the plug-in,
    each evaluator reports under its name, and an export writes the head or refuses before
    writing anything."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topics.yaml").write_text(tiny_model_yaml(max_length=12) + TOPICS)
    for override, message in [
            ("task.label_smothing=0.2", "unknown key 'task.label_smothing' of task family "
             "'smoothed_topics:SmoothedClassification' (did you mean 'label_smoothing'?)"),
            ("task.evaluators.1.labl=music", "unknown key 'task.evaluators.1.labl' of evaluator "
             "'smoothed_topics:ClassRecall' (did you mean 'label'?)"),
            ("task.label_smoothing=1.5", "task.label_smoothing: expected less than 1")]:
        code, _, err = _jaxcult(capsys, "train", "topics.yaml", "--run-dir", "bad", override)
        assert code == 2 and message in err, err[-2000:]
    assert not (tmp_path / "bad").exists()

    code, out, err = _jaxcult(capsys, "train", "topics.yaml", "--run-dir", "run")
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["evaluator"] == "accuracy+food"
    assert summary["primary_metric"] == "accuracy/accuracy"
    assert set(summary["metrics"]["de"]) == {"accuracy/accuracy", "food/recall", "food/support"}
    assert "food/recall" in out

    # the same run as if it had pooled by the mean: its head is the same shape, its pooling not
    shutil.copytree(tmp_path / "run", tmp_path / "mean")
    config = tmp_path / "mean" / "config.yaml"
    config.write_text(config.read_text().replace("pooling: cls", "pooling: mean"))
    from jaxcult.run.restore import load_run_model

    assert load_run_model(tmp_path / "run")[1].head.pooling == "cls"
    assert load_run_model(tmp_path / "mean")[1].head.pooling == "mean"

    code, _, err = _jaxcult(capsys, "export", "run", "--format", "adapterhub", "--out", "hub")
    assert code == 0, err[-2000:]
    head = json.loads((tmp_path / "hub" / "head_config.json").read_text())["config"]
    assert (head["head_type"], head["num_labels"]) == ("classification", 8)
    code, _, err = _jaxcult(capsys, "export", "mean", "--format", "adapterhub", "--out",
                            "nothing")
    assert code == 2 and "pooling: mean" in err and "--no-head" in err
    assert not (tmp_path / "nothing").exists()
    code, _, err = _jaxcult(capsys, "export", "mean", "--format", "adapterhub", "--out", "alone",
                            "--no-head")
    assert code == 0, err[-2000:]
    assert not (tmp_path / "alone" / "head_config.json").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "alone" / "jaxcult_head.safetensors"), "numpy") as saved:
        meta = saved.metadata()
    assert meta["task"] == "smoothed_topics:SmoothedClassification"
    assert json.loads(meta["settings"]) == {"pooling": "mean", "head": "jaxcult",
                                            "label_smoothing": 0.1}


def _recipe_command(tmp_path, *args: str, env: dict | None = None):
    environment = {**os.environ, "PYTHONPATH": f"{PLUGINS}{os.pathsep}"
                   f"{os.environ.get('PYTHONPATH', '')}", "JAXCULT_RECIPES": "toy_recipe:RECIPE",
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", "jaxcult.cli", *args], cwd=tmp_path,
                          env=environment, capture_output=True, text=True)


def test_a_recipe_from_outside_the_package_is_a_command_with_resumable_stages(tmp_path):
    """tests/plugins/toy_recipe.py, named in JAXCULT_RECIPES: `jaxcult toy` exists, a stage
    killed midway resumes to the same outputs, a rerun with other settings is refused naming
    the key, and a second writer on the folder is refused naming the holder."""
    from jaxcult.locks import FolderLock

    (tmp_path / "toy.yaml").write_text("numbers: 6\nscale: 3\n")
    listed = _recipe_command(tmp_path, "--help")
    assert listed.returncode == 0 and "a toy recipe: count, then total" in listed.stdout
    killed = _recipe_command(tmp_path, "toy", "count", "toy.yaml", "--out", "out",
                             env={"TOY_RECIPE_KILL_AFTER": "4"})
    assert killed.returncode == 137
    assert len((tmp_path / "out" / "numbers.jsonl").read_text().splitlines()) == 4
    done = _recipe_command(tmp_path, "toy", "run", "toy.yaml", "--out", "out")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout) == {"count": {"records": 6, "written_now": 2},
                                           "total": {"total": 45, "records": 6}}
    lines = [json.loads(x) for x in (tmp_path / "out" / "numbers.jsonl").read_text().splitlines()]
    assert [r["n"] for r in lines] == list(range(6))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["total"] == {"total": 45, "records": 6}
    assert yaml.safe_load((tmp_path / "out" / "toy.yaml").read_text())["scale"] == 3

    other = _recipe_command(tmp_path, "toy", "count", "toy.yaml", "--out", "out", "scale=2")
    assert other.returncode == 2
    assert "its count outputs were made with other settings (scale differ" in other.stderr
    unknown = _recipe_command(tmp_path, "toy", "count", "toy.yaml", "--out", "out", "scal=2")
    assert unknown.returncode == 2 and "unknown key 'scal' (did you mean 'scale'?)" in unknown.stderr
    with FolderLock(tmp_path / "out"):
        busy = _recipe_command(tmp_path, "toy", "total", "toy.yaml", "--out", "out")
    assert busy.returncode == 2 and f"in use by another jaxcult process (pid {os.getpid()}" in \
        busy.stderr


def test_a_recipe_registers_through_an_entry_point(tmp_path):
    """An installed distribution's `jaxcult.recipes` entry point adds the command too."""
    site = tmp_path / "site"
    info = site / "toy_recipes-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-recipes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[jaxcult.recipes]\ntoy = toy_recipe:RECIPE\n")
    (tmp_path / "toy.yaml").write_text("numbers: 2\n")
    result = _recipe_command(tmp_path, "toy", "run", "toy.yaml", "--out", "out",
                             env={"JAXCULT_RECIPES": "", "PYTHONPATH": f"{site}{os.pathsep}"
                                  f"{PLUGINS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "total.json").read_text()) == {"total": 1}
