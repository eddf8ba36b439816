"""`jaxcult sweep`: grid parsing, the paired statistics against hand values (and scipy), and a
two-cell sweep end to end on a tiny model (report, read-back of finished cells, errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_minilm, tiny_model_yaml

from jaxcult.cli import main
from jaxcult.errors import UserError
from jaxcult.eval.paired import compare, sign_test, t_quantile_975
from jaxcult.run.sweep import parse_grid


def test_grid_is_the_product_of_its_axes_with_yaml_lists_kept_whole():
    cells = parse_grid(["schedule.name=standard,gu", "peft.leave_out=[0,1],[]"])
    assert [c.name for c in cells] == [
        "schedule.name=standard peft.leave_out=[0,1]", "schedule.name=standard peft.leave_out=[]",
        "schedule.name=gu peft.leave_out=[0,1]", "schedule.name=gu peft.leave_out=[]"]
    assert cells[0].folder == "schedule.name-standard__peft.leave_out-_0,1_"
    for bad, message in ((["schedule.name"], "expected KEY=VALUE1,VALUE2"),
                         (["a=1", "a=2"], "a is given twice"), (["a=1,1"], "listed twice"),
                         (["a=1,"], "expected KEY=VALUE1")):
        with pytest.raises(UserError, match=message):
            parse_grid(bad)


def test_sign_test_and_confidence_interval_by_hand():
    assert sign_test([1, 1, 1, 1, -1]) == pytest.approx(2 * (1 + 5) / 32)
    assert sign_test([1, 0, 0]) == 1.0 and sign_test([0]) == 1.0      # ties dropped
    assert sign_test([1] * 6) == pytest.approx(2 / 64)
    result = compare({0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.53, 1: 0.53, 2: 0.58, 7: 0.9})
    assert result.seeds == [0, 1, 2] and result.differences == pytest.approx([0.03, 0.01, 0.04])
    sd = math.sqrt(((0.03 - 0.08 / 3) ** 2 + (0.01 - 0.08 / 3) ** 2 + (0.04 - 0.08 / 3) ** 2) / 2)
    assert result.ci_high - result.mean == pytest.approx(4.303 * sd / math.sqrt(3))
    assert (result.wins, result.losses) == (3, 0)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 80):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


CONFIG = "name: sweep\n" + tiny_model_yaml() + """\
data: {max_train_examples: 32, max_eval_examples: 16, target_languages: [en, de, ru]}
trainer: {batch_size: 8, eval_batch_size: 16, steps: 4}
schedule: {name: standard, k: 2}
fisher: {num_batches: 1, batch_size: 8}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""


@needs_minilm
@pytest.mark.slow   # ~25 s; the grid, sweep files and the paired statistics stay in the default run
def test_sweep_trains_every_cell_over_seeds_reports_and_resumes(tmp_path, monkeypatch, capsys):
    """Also the multi-seed run every cell is: mean +- std per language, `train --resume` of an
    unfinished seed, finished seeds and cells kept as they are."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(CONFIG)
    argv = ["sweep", "sweep.yaml", "--grid", "schedule.name=standard,fun", "--seeds", "2",
            "--out", "out", "--baseline", "schedule.name=standard"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert list(record["cells"]) == ["schedule.name=standard", "schedule.name=fun"]
    fun = record["cells"]["schedule.name=fun"]
    cell = tmp_path / "out" / fun["folder"]
    per_seed = [json.loads((cell / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
    assert [s["seed"] for s in per_seed] == [0, 1]
    for lang in ("en", "de", "ru"):
        values = [s["metrics"][lang]["accuracy"] for s in per_seed]
        assert np.isclose(fun["metrics"][lang]["accuracy"], np.mean(values))
        assert np.isclose(fun["std"][lang]["accuracy"], np.std(values, ddof=1))
    assert fun["per_seed_target"] == {str(s): per_seed[s]["average_excluding_source"]["accuracy"]
                                      for s in (0, 1)}
    standard = record["cells"]["schedule.name=standard"]["per_seed_target"]
    assert fun["paired"]["differences"] == pytest.approx(
        [fun["per_seed_target"][s] - standard[s] for s in ("0", "1")])
    results = (tmp_path / "out" / "results.md").read_text()
    assert "Produced by `jaxcult sweep sweep.yaml --grid schedule.name=standard,fun" in results
    assert "| schedule.name=fun | " in results and "sign test p" in results
    assert (tmp_path / "out/plots/sweep-scores.png").stat().st_size > 0
    assert (tmp_path / "out/plots/fisher-schedule.name-fun.png").stat().st_size > 0  # FUN logs tr(F)

    # an unfinished seed 1 is trained again on resume; seed 0 is kept as it is
    for unfinished in (cell / "seed-1" / "summary.json", cell / "summary.json"):
        unfinished.unlink()
    before = (cell / "seed-0" / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(cell)]) == 0
    assert "mean +- sample std over seeds 0, 1" in capsys.readouterr().out
    assert (cell / "seed-1" / "summary.json").exists()
    assert (cell / "seed-0" / "metrics.jsonl").read_text() == before
    assert main(["train", "sweep.yaml", "--run-dir", str(cell), "schedule.name=fun"]) == 2  # kept
    assert "seed-0" in capsys.readouterr().err

    finished = (cell / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0                                     # finished cells are read back
    assert (cell / "summary.json").stat().st_mtime_ns == finished
    assert "schedule.name=fun: finished, read back" in capsys.readouterr().err
    assert main([*argv, "optimizer.lr=0.5"]) == 2              # another config: refused
    assert "was run with another config" in capsys.readouterr().err
    assert main(["sweep", "sweep.yaml", "--grid", "schedule.name=standard,nope", "--seeds", "2",
                 "--out", "out2"]) == 2                        # an invalid cell fails first
    assert "sweep cell 'schedule.name=nope'" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()

    # the same sweep as a file: the same cells (read back), its command in the report
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "schedules.yaml").write_text(
        "sweep:\n  config: ../sweep.yaml\n  grid: {schedule.name: [standard, fun]}\n  seeds: 2\n"
        "  baseline: schedule.name=standard\n  out: out\n")
    assert main(["sweep", "sweeps/schedules.yaml"]) == 0
    assert capsys.readouterr().err.count("finished, read back") == 2
    results = (tmp_path / "out" / "results.md").read_text()
    assert "Produced by `jaxcult sweep sweeps/schedules.yaml`" in results
    assert main(["sweep", "sweep.yaml", "--seeds", "2"]) == 2
    assert "sweep.yaml: a run config needs --grid, --out" in capsys.readouterr().err


def test_sweep_file_settings(tmp_path):
    from jaxcult.run.sweep import grid_cells, override_text, read_sweep_file

    path = tmp_path / "grid.yaml"
    path.write_text("sweep:\n  config: /abs/run.yaml\n  grid: {schedule.k: [50, 100], "
                    "trainer.vectorize_seeds: [true], peft.leave_out: [[0, 1]]}\n  seeds: [3, 4]\n"
                    "  out: runs/x\n  overrides: [trainer.steps=5]\n")
    settings, config = read_sweep_file(path)
    assert config == Path("/abs/run.yaml") and settings.seeds == [3, 4]
    cells = grid_cells([(k, [override_text(v) for v in vs]) for k, vs in settings.grid.items()], "x")
    assert [c.name for c in cells] == [
        "schedule.k=50 trainer.vectorize_seeds=true peft.leave_out=[0, 1]",
        "schedule.k=100 trainer.vectorize_seeds=true peft.leave_out=[0, 1]"]
    (tmp_path / "run.yaml").write_text("name: plain\n")
    assert read_sweep_file(tmp_path / "run.yaml") is None   # a run config
    for text, message in (("sweep: {config: a.yaml, grid: {a: []}, seeds: 2, out: o}", "has no values"),
                          ("sweep: {config: a.yaml, grid: {a: [1]}, seeds: 0, out: o}", "positive"),
                          ("sweep: {config: a.yaml, grid: {a: [1]}, seeds: 2}", "out"),
                          ("sweep: {config: a.yaml, grid: {a: [1]}, seeds: 2, out: o, nope: 1}", "nope")):
        path.write_text(text + "\n")
        with pytest.raises(UserError, match=message):
            read_sweep_file(path)
