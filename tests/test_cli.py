"""CLI behaviour: help for every command, exit code 2 with one line for user errors, run dirs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxcult import rundir
from jaxcult.cli import main
from jaxcult.errors import UserError

COMMANDS = ["train", "eval", "export", "convert", "plot", "assets"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "jaxcult.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert command in capsys.readouterr().out


def test_misspelled_section_exits_2_with_suggestion(repo):
    result = run_cli("train", "experiments/default.yaml", "optimiser.lr=1", cwd=repo)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "optimiser" in lines[0] and "optimizer" in lines[0]


def test_bad_type_exits_2(repo):
    result = run_cli("train", "experiments/default.yaml", "optimizer.lr=abc", cwd=repo)
    assert result.returncode == 2
    assert "optimizer.lr" in result.stderr and "number" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_yaml_error_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: [3\n  seed: 1\n")
    result = run_cli("train", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr


def test_debug_shows_traceback(tmp_path):
    result = run_cli("train", str(tmp_path / "missing.yaml"), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_print_config_resolves_overrides(repo):
    result = run_cli("train", "experiments/default.yaml", "optimizer.lr=0.005", "--print-config",
                     cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "lr: 0.005" in result.stdout


def test_stray_argument_is_an_error(repo):
    result = run_cli("train", "experiments/default.yaml", "oops", cwd=repo)
    assert result.returncode == 2 and "oops" in result.stderr


def test_unknown_asset_exits_2():
    result = run_cli("assets", "path", "no-such-asset")
    assert result.returncode == 2
    assert "no-such-asset" in result.stderr and "minilm-l6" in result.stderr


def test_run_dir_with_outputs_is_protected(tmp_path, repo):
    (tmp_path / "config.yaml").write_text("name: old\n")
    (tmp_path / "summary.json").write_text("{}")
    result = run_cli("train", "experiments/default.yaml", "--run-dir", str(tmp_path), cwd=repo)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "config.yaml").read_text() == "name: old\n"
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_default_run_root_is_named_and_unique(tmp_path):
    first = rundir.default_run_root("my run", base=tmp_path)
    first.mkdir()
    second = rundir.default_run_root("my run", base=tmp_path)
    assert first.name.startswith("my-run-") and second != first


def test_prepare_creates_layout_and_overwrite_clears(tmp_path):
    run = rundir.check_writable(tmp_path / "r", overwrite=False, resume=False)
    rundir.prepare(run, overwrite=False, resume=False)
    assert run.checkpoints.is_dir() and run.plots.is_dir()
    run.summary.write_text("{}")
    with pytest.raises(UserError):
        rundir.check_writable(run.root, overwrite=False, resume=False)
    rundir.prepare(rundir.check_writable(run.root, overwrite=True, resume=False),
                   overwrite=True, resume=False)
    assert not run.summary.exists()


def test_convert_bad_inputs_exit_2(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt_neox"}')
    result = run_cli("convert", str(broken), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "gpt_neox" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("convert", "no-such-model", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no-such-model" in result.stderr
