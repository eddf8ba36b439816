"""Multi-seed runs: one run per seed, mean +- std per language, resume skips finished seeds."""

from __future__ import annotations

import json

import numpy as np
from conftest import needs_minilm, tiny_model_yaml

from jaxcult.cli import main

pytestmark = needs_minilm

CONFIG = "name: seeds\n" + tiny_model_yaml() + """\
data: {max_train_examples: 32, max_eval_examples: 16, target_languages: [en, de, ru]}
trainer: {batch_size: 8, eval_batch_size: 16, steps: 3, seeds: [1, 2, 3]}
schedule: {name: standard}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""


def test_seeds_report_mean_and_std_and_resume_skips_finished(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seeds.yaml").write_text(CONFIG)
    assert main(["train", "seeds.yaml", "--run-dir", "run"]) == 0
    assert "mean +- std over seeds 1, 2, 3" in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    per_seed = [json.loads((tmp_path / "run" / f"seed-{s}" / "summary.json").read_text())
                for s in (1, 2, 3)]
    assert [s["seed"] for s in per_seed] == [1, 2, 3]
    for lang in ("en", "de", "ru"):
        values = [s["metrics"][lang]["accuracy"] for s in per_seed]
        assert np.isclose(summary["metrics"][lang]["accuracy"], np.mean(values))
        assert np.isclose(summary["std"][lang]["accuracy"], np.std(values))
    assert np.isclose(summary["average_excluding_source"]["accuracy"],
                      np.mean([s["average_excluding_source"]["accuracy"] for s in per_seed]))
    # an unfinished seed 3 is trained again on resume; seeds 1 and 2 are kept as they are
    (tmp_path / "run" / "seed-3" / "summary.json").unlink()
    before = (tmp_path / "run" / "seed-1" / "metrics.jsonl").read_text()
    assert main(["train", "--resume", "run"]) == 0
    assert (tmp_path / "run" / "seed-3" / "summary.json").exists()
    assert (tmp_path / "run" / "seed-1" / "metrics.jsonl").read_text() == before
    assert main(["train", "seeds.yaml", "--run-dir", "run"]) == 2  # refuses to overwrite
    assert "seed-1" in capsys.readouterr().err
