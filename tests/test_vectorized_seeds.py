"""Vectorised seeds: N seeds trained as one vmapped program give each seed exactly what its
separate run gives (losses, tr(F), unfreezing events, validation and final scores), with the
frozen backbone held once, also when the vectorised run is preempted and resumed, and with
the seed axis split over devices (`mesh.seed`, 8 simulated CPU devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_minilm, xla_flags

from jaxcult.cli import main

CONFIG = """\
name: vectorised
model: {name: minilm-l6, max_length: 16, overrides: {num_hidden_layers: 2}}
data: {max_train_examples: 32, max_eval_examples: 16, target_languages: [de]}
trainer: {batch_size: 8, eval_batch_size: 16, steps: 4, log_every: 1, eval_every: 2, seeds: [0, 1, 2]}
schedule: {name: gu, k: 1}
fisher: {num_batches: 1, batch_size: 8, track_every: 2}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
probes: [{name: "sigterm_probe:SigtermAt", every: 2}]
"""
PLUGINS = Path(__file__).resolve().parent / "plugins"


def _records(path, kind):
    return [json.loads(line) for line in path.read_text().splitlines()
            if kind is None or json.loads(line).get("split") == kind]


# odd seeds FUN, even seeds GU: tr(F) is needed for some seeds only at most steps
MIXED = "seed_dependent_schedule:FunOnOddSeeds"


@needs_minilm
@pytest.mark.parametrize("schedule", [pytest.param(s, marks=pytest.mark.slow)
                                      for s in ("gu", "fun", MIXED)])
def test_vmapped_seeds_equal_separate_runs(tmp_path, monkeypatch, schedule):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PLUGINS))
    (tmp_path / "run.yaml").write_text(CONFIG)
    # the vectorised run is preempted after step 2 (SIGTERM: every seed checkpoints) and resumed
    monkeypatch.setenv("JAXCULT_TEST_SIGTERM_AT", "2")
    assert main(["train", "run.yaml", "--run-dir", "together", f"schedule.name={schedule}",
                 "trainer.vectorize_seeds=true"]) == 143
    assert not (tmp_path / "together" / "summary.json").exists()
    assert main(["train", "--resume", "together"]) == 0
    assert main(["train", "run.yaml", "--run-dir", "apart", f"schedule.name={schedule}",
                 "trainer.vectorize_seeds=false"]) == 0
    env = {k: v for k, v in os.environ.items() if k != "JAXCULT_TEST_SIGTERM_AT"}
    env.update(JAXCULT_TEST_SIGTERM_AT="", JAX_PLATFORMS="cpu", PYTHONPATH=str(PLUGINS),
               XLA_FLAGS=xla_flags(8))
    sharded = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train", "run.yaml", "--run-dir",
                              "sharded", f"schedule.name={schedule}", "trainer.vectorize_seeds=true",
                              "mesh.seed=-1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "split over 3 of the 8 devices" in sharded.stderr
    for seed, other in [(s, o) for s in (0, 1, 2) for o in ("together", "sharded")]:
        together, apart = tmp_path / other / f"seed-{seed}", tmp_path / "apart" / f"seed-{seed}"
        losses = [[r["loss"] for r in _records(run / "metrics.jsonl", "train")]
                  for run in (together, apart)]
        assert len(losses[0]) == 4 and np.allclose(*losses, rtol=0, atol=1e-5), (seed, losses)
        events = [[(e["step"], e["groups"]) for e in _records(run / "events.jsonl", None)]
                  for run in (together, apart)]
        assert events[0] == events[1]
        traces = [[r["trace"] for r in _records(run / "fisher.jsonl", None)] for run in (together, apart)]
        assert len(traces[0]) == len(traces[1]) > 0
        for a, b in zip(*traces):
            assert a.keys() == b.keys() and np.allclose(list(a.values()), list(b.values()), rtol=1e-4)
        validations = [[(r["step"], r["accuracy"]) for r in _records(run / "metrics.jsonl", "validation")]
                       for run in (together, apart)]
        assert [s for s, _ in validations[0]] == [2, 4] and np.allclose(*validations, atol=1e-6)
        scores = [json.loads((run / "summary.json").read_text())["metrics"] for run in (together, apart)]
        for lang in ("en", "de"):
            assert scores[0][lang]["accuracy"] == pytest.approx(scores[1][lang]["accuracy"], abs=1e-6)
    # the seeds differ from each other (data order, initialisation): vmapping kept them apart
    if schedule == MIXED:  # the seeds really did decide differently
        reasons = {seed: {e["reason"] for e in _records(tmp_path / "apart" / f"seed-{seed}" /
                                                        "events.jsonl", None) if e["step"] > 0}
                   for seed in (0, 1)}
        assert reasons == {0: {"gradual unfreezing: next layer top-down"},
                           1: {"largest tr(F) among frozen groups"}}
    first = [[r["loss"] for r in _records(tmp_path / "together" / f"seed-{s}" / "metrics.jsonl",
                                          "train")] for s in (0, 1)]
    assert not np.allclose(*first)


RANDOM_BACKBONE = """\
name: own-backbones
model:
  name: random
  tokenizer: minilm-l6
  max_length: 16
  overrides: {model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,
              num_attention_heads: 2, intermediate_size: 37}
data: {max_train_examples: 32, max_eval_examples: 64, target_languages: [de], eval_split: validation}
trainer: {batch_size: 8, eval_batch_size: 32, steps: 3, log_every: 1, eval_every: 2, seeds: [0, 1]}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""


@needs_minilm
@pytest.mark.slow   # ~12 s; vmapped seeds against separate runs stay in the default suite
def test_vmapped_seeds_with_their_own_random_backbones(tmp_path, monkeypatch, capsys):
    """A `random` model gives each seed its own backbone: stacked once, vmapped beside the
    parameters in training, validation and final scoring (where a language whose split is the
    validation split takes each seed's best validation result)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(RANDOM_BACKBONE)
    for folder, together in (("together", "true"), ("apart", "false")):
        assert main(["train", "run.yaml", "--run-dir", folder,
                     f"trainer.vectorize_seeds={together}"]) == 0
        said = capsys.readouterr().err  # en's test split is its validation split: reused
        assert ("evaluated en: its split is the validation split, scored at each seed's best step ("
                if together == "true" else "evaluated en: its split is the validation split") in said
    for seed in (0, 1):
        runs = [tmp_path / folder / f"seed-{seed}" for folder in ("together", "apart")]
        losses = [[r["loss"] for r in _records(run / "metrics.jsonl", "train")] for run in runs]
        assert len(losses[0]) == 3 and np.allclose(*losses, rtol=0, atol=1e-5), (seed, losses)
        validations = [[(r["step"], r["accuracy"]) for r in _records(run / "metrics.jsonl", "validation")]
                       for run in runs]
        assert [s for s, _ in validations[0]] == [2, 3] and validations[0] == validations[1]
        scores = [json.loads((run / "summary.json").read_text())["metrics"] for run in runs]
        assert scores[0] == scores[1] and scores[0].keys() == {"en", "de"}
    losses = [[r["loss"] for r in _records(tmp_path / "together" / f"seed-{s}" / "metrics.jsonl",
                                           "train")] for s in (0, 1)]
    assert not np.allclose(*losses)  # their own backbones (and data orders) kept apart


@needs_minilm
@pytest.mark.parametrize("together", ["true", "false"])
def test_bad_input_leaves_the_old_multi_seed_run_intact(tmp_path, monkeypatch, capsys, together):
    """A multi-seed run's folder is replaced only once its first seed has loaded data and
    model: an --overwrite whose model cannot take the config exits 2, the old run untouched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(RANDOM_BACKBONE)
    old = tmp_path / "run"
    (old / "seed-0").mkdir(parents=True)
    (old / "config.yaml").write_text("old\n")
    (old / "seed-0" / "summary.json").write_text("{}\n")
    assert main(["train", "run.yaml", "--run-dir", "run", "--overwrite", "model.max_length=600",
                 f"trainer.vectorize_seeds={together}"]) == 2
    assert "do not fit the model's position table of 512 positions" in capsys.readouterr().err
    assert (old / "config.yaml").read_text() == "old\n"
    assert (old / "seed-0" / "summary.json").read_text() == "{}\n"
