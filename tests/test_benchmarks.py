"""The benchmark scripts run as committed (one tiny round each), so they cannot rot between
the measurements the docs quote. Slow: the train-step one builds the PyTorch + adapters
environment on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_asset

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow   # ~60 s, and the adapters environment on first use
def test_train_step_benchmark_runs_one_tiny_round():
    require_asset("multilingual-e5-small")
    out = run_script("benchmarks/train_step.py", "--batch", "4", "--length", "16", "--steps", "1",
                     "--rounds", "1", "--fisher-batches", "2")
    assert "step, all" in out and "step, top-1" in out and "FUN check (2 batches)" in out


@pytest.mark.slow   # ~15 s
def test_scan_compile_benchmark_runs_one_tiny_round():
    out = run_script("benchmarks/scan_compile.py", "--layers", "2", "--rounds", "1")
    assert "scanned / unrolled" in out


@pytest.mark.slow   # ~5 min: seven whole runs, the adapters environment on first use
def test_whole_run_benchmark_runs_one_tiny_round(tmp_path, shared_data):
    out = run_script("benchmarks/run.py", "--steps", "12", "--k", "4", "--rounds", "1",
                     "--eval-examples", "8", "--fisher-batches", "2", "--official-padding",
                     "--results", str(tmp_path / "run.json"))
    assert "pytorch dynamic padding" in out and "official pad-to-128 pipeline" in out


@pytest.mark.slow   # ~60 s
def test_generation_benchmark_runs_one_tiny_round():
    require_asset("smollm2-135m-instruct")
    out = run_script("benchmarks/generate.py", "--new-tokens", "2", "--rounds", "1",
                     "--file-prompts", "2")
    assert "batch 1:" in out and "file of 2 chat prompts" in out


@pytest.mark.slow   # ~60 s
def test_judge_prefix_benchmark_runs_one_tiny_round():
    require_asset("smollm2-135m-instruct")
    out = run_script("benchmarks/judge_prefix.py", "--posts", "2", "--rounds", "1")
    assert "ratio shared/full" in out and "max |difference|" in out


@pytest.mark.slow   # ~2 min
def test_dialogue_prefix_benchmark_runs_one_tiny_round():
    require_asset("smollm2-135m-instruct")
    out = run_script("benchmarks/dialogue_prefix.py", "--dialogues", "2", "--turns", "2",
                     "--rounds", "1")
    assert "speed-up" in out and "same dialogues: True" in out


@pytest.mark.slow   # ~40 s each
@pytest.mark.parametrize(("lever", "dtype"), [("dropout_masks", "float32"),
                                              ("float32_products", "bfloat16"),
                                              ("gelu", "float32")])
def test_levers_benchmark_runs_one_tiny_round(lever, dtype):
    require_asset("multilingual-e5-small")
    out = run_script("benchmarks/levers.py", "--lever", lever, "--dtype", dtype, "--batch", "4",
                     "--length", "16", "--steps", "1", "--rounds", "1", "--fisher-batches", "1")
    assert f"lever {lever}: e5-small Pfeiffer rf16, {dtype}" in out and "speed-up" in out
    assert "FUN check (1 batches)" in out


@pytest.mark.slow   # ~10 s
def test_weight_formats_benchmark_runs_one_tiny_round():
    out = run_script("benchmarks/weight_formats.py", "--matrices", "2", "--rows", "8", "--cols",
                     "16", "--rounds", "1", "--repeats", "1")
    assert "int8 + scale, fused multiply-reduce" in out and "GB/s" in out


@pytest.mark.slow   # ~2 min each
@pytest.mark.parametrize("lever", ["order", "buckets"])
def test_eval_order_benchmark_runs_one_tiny_round(shared_data, lever):
    require_asset("multilingual-e5-small")
    out = run_script("benchmarks/eval_order.py", "--lever", lever, "--examples", "10", "--batch",
                     "8", "--rounds", "1")
    assert "speed-up" in out and "same accuracy on every split: True" in out


@pytest.mark.slow   # ~2 min: two fresh processes compiling the first step's program
def test_compile_ahead_benchmark_runs_one_tiny_round(shared_data):
    require_asset("multilingual-e5-small")
    out = run_script("benchmarks/compile_ahead.py", "--rounds", "1", "--steps", "1")
    assert "one at a time" in out and "speed-up" in out
