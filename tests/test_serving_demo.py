"""The CLCA demo's simulate and judge stages on `jaxcult serve` in a subprocess (the `remote`
backend) write the files the in-process backend writes, with greedy decoding (slow: SmolLM2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxcult import assets

DEMO = Path(__file__).resolve().parent.parent / "experiments" / "clca" / "demo.yaml"
GREEDY = ["cultures=[uk, japan]", "simulate.generation.do_sample=false"]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not assets.get_asset("smollm2-135m-instruct").installed(),
    reason="asset smollm2-135m-instruct not installed")]


def start_server(*settings: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "jaxcult.cli", "serve", "smollm2-135m-instruct", "--port", "0",
         *settings], stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"on (http://\S+/v1)", line)
        if found:
            return server, found.group(1)
    raise AssertionError(f"jaxcult serve exited with {server.wait()}")


def test_demo_simulate_and_judge_on_jaxcult_serve_equal_the_in_process_backend(tmp_path):
    from jaxcult.recipes.clca import run_stages

    server, url = start_server("batch_size=10", "max_new_tokens=32",
                               "length_buckets=[256, 320, 512, 640]")
    try:
        remote = json.dumps({"endpoint": url, "model": "smollm2-135m-instruct"})
        for stage in ("simulate", "judge"):
            run_stages(DEMO, GREEDY, stage, tmp_path / "local")
            run_stages(DEMO, [*GREEDY, f"simulate.model={remote}"], stage, tmp_path / "remote")
    finally:
        server.terminate()
        server.wait(timeout=60)
    for name in ("dialogues.jsonl", "judged.jsonl"):
        local = (tmp_path / "local" / name).read_text()
        assert local and (tmp_path / "remote" / name).read_text() == local


def test_a_killed_server_stops_the_stage_in_one_line_keeping_finished_records(tmp_path):
    server, url = start_server("batch_size=2", "max_new_tokens=32",
                               "length_buckets=[256, 512, 640]")
    remote = json.dumps({"endpoint": url, "model": "smollm2-135m-instruct", "backoff_s": 0.2,
                         "max_retries": 2})
    out = tmp_path / "out"
    stage = subprocess.Popen(
        [sys.executable, "-m", "jaxcult.cli", "clca", "simulate", str(DEMO), "--out", str(out),
         *GREEDY, "simulate.dialogues_per_batch=2", f"simulate.model={remote}"],
        stderr=subprocess.PIPE, text=True)
    try:
        dialogues = out / "dialogues.jsonl"
        while not (dialogues.exists() and dialogues.read_text().count("\n") >= 2):
            assert stage.poll() is None, stage.stderr.read()
            time.sleep(0.2)
    finally:
        server.kill()
        server.wait(timeout=60)
    kept = dialogues.read_text()
    error = stage.communicate(timeout=120)[1].strip().splitlines()
    assert stage.returncode == 2
    assert "no answer from smollm2-135m-instruct after 3 tries" in error[-1]
    assert dialogues.read_text() == kept and kept.count("\n") in (2, 4)   # whole batches only
