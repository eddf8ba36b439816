"""Preemption: SIGTERM is acknowledged at once, writes a checkpoint and exits 143; SIGKILL at any
moment loses nothing; resumed runs end bit-identical to an uninterrupted one (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_minilm, tiny_model_yaml

pytestmark = needs_minilm

CONFIG = "name: tiny\n" + tiny_model_yaml(layers=4, max_length=24) + """\
data: {max_train_examples: 256, max_eval_examples: 32, target_languages: [en, de]}
trainer: {batch_size: 8, eval_batch_size: 16, log_every: 1, steps: 40, eval_every: 10}
schedule: {name: fun, k: 4}
fisher: {num_batches: 2, track_every: 6}
logging: {tensorboard: false, progress: lines}
checkpoint: {every: 5, keep: 3}
"""


def start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "jaxcult.cli", "train", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout=180.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def checkpoint_steps(run: Path) -> list[int]:
    folder = run / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]


def final_params(run: Path):
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().restore(str(run / "checkpoints" / "40" / "state"))
    return [np.asarray(x) for x in __import__("jax").tree.leaves(tree["params"])]


def finish(proc, expect: int = 0) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == expect, out
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    (root / "tiny.yaml").write_text(CONFIG)
    finish(start(["tiny.yaml", "--run-dir", "run"], root))
    return root / "run"


def assert_same_run(run: Path, reference: Path):
    assert losses(run) == losses(reference)
    ours = json.loads((run / "summary.json").read_text())
    theirs = json.loads((reference / "summary.json").read_text())
    assert ours == theirs
    for a, b in zip(final_params(run), final_params(reference)):
        assert np.array_equal(a, b)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    ref_events = [json.loads(line) for line in (reference / "events.jsonl").read_text().splitlines()]
    assert events == ref_events


def test_sigterm_checkpoints_and_resume_continues_exactly(tmp_path, reference):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    proc = start(["tiny.yaml", "--run-dir", "run"], tmp_path)
    run = tmp_path / "run"
    assert wait_for(lambda: 10 in checkpoint_steps(run))
    proc.send_signal(signal.SIGTERM)
    out = finish(proc, expect=143)  # 128 + SIGTERM: never mistaken for a finished run
    assert "SIGTERM: stopping after step" in out and "stopped by SIGTERM after step" in out
    assert not (run / "summary.json").exists()
    finish(start(["--resume", "run"], tmp_path))
    assert_same_run(run, reference)


@pytest.mark.slow  # ~100 s: three killed runs and their resumes; SIGTERM is covered by default
def test_sigkill_at_three_moments_then_resume(tmp_path, reference):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    run = tmp_path / "run"
    moments = [
        lambda: 5 in checkpoint_steps(run),                           # between checkpoints
        lambda: any("tmp" in p.name for p in (run / "checkpoints").iterdir()),  # during a write
        lambda: 25 in checkpoint_steps(run),                          # later, after an eval
    ]
    proc = start(["tiny.yaml", "--run-dir", "run"], tmp_path)
    for moment in moments:
        assert wait_for(lambda: (run / "checkpoints").exists())
        assert wait_for(moment, interval=0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = start(["--resume", "run"], tmp_path)
    finish(proc)
    assert_same_run(run, reference)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, reference):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    latest = run / "checkpoints" / "40"
    victims = sorted((p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 100),
                     key=lambda p: -p.stat().st_size)
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    (run / "summary.json").unlink()
    out = finish(start(["--resume", "run"], tmp_path))
    assert "unreadable" in out and "trying the previous one" in out
    assert (run / "checkpoints" / "corrupt-40").is_dir()
    assert_same_run(run, reference)
