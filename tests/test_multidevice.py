"""The adapter trainer on 8 simulated CPU devices: same losses and parameters as one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcult.hub import assets

pytestmark = pytest.mark.skipif(not assets.get_asset("minilm-l6").installed(),
                                reason="asset minilm-l6 not installed")

CONFIG = """
name: mesh
model:
  name: random
  tokenizer: minilm-l6
  max_length: 16
  overrides: {model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,
              num_attention_heads: 4, intermediate_size: 64}
peft: {kind: pfeiffer, reduction_factor: 4}
data: {max_train_examples: 128, max_eval_examples: 16, target_languages: [en, de]}
trainer: {batch_size: 8, eval_batch_size: 16, log_every: 1, steps: 10, eval_every: 10}
schedule: {name: gu, k: 3}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""


def run(tmp: Path, name: str, devices: int, mesh: dict[str, int]) -> Path:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    overrides = [f"mesh.{k}={v}" for k, v in mesh.items()]
    (tmp / "mesh.yaml").write_text(CONFIG)
    result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train", "mesh.yaml", "--run-dir",
                             name, *overrides], cwd=tmp, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / name


def losses(path: Path) -> np.ndarray:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in rows if r["split"] == "train"])


def params(path: Path) -> list[np.ndarray]:
    """Final parameters, read in a process that has the 8 devices the checkpoint may name."""
    script = (
        "import sys, jax, numpy as np, orbax.checkpoint as ocp\n"
        "tree = ocp.PyTreeCheckpointer().restore(sys.argv[1])\n"
        "leaves = [np.asarray(x) for x in jax.tree.leaves(tree['state']['params'])]\n"
        "np.savez(sys.argv[2], *leaves)\n")
    out = path / "params.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, "-c", script, str(path / "checkpoints" / "10" / "device"),
                             str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run(tmp_path_factory.mktemp("single"), "run", 1, {"data": 1})


@pytest.mark.parametrize("mesh", [{"data": 8, "fsdp": 1, "tensor": 1},
                                  {"data": 1, "fsdp": 8, "tensor": 1},
                                  {"data": 2, "fsdp": 2, "tensor": 2}],
                         ids=["data8", "fsdp8", "d2f2t2"])
def test_mesh_matches_single_device(tmp_path, single, mesh):
    sharded = run(tmp_path, "run", 8, mesh)
    np.testing.assert_allclose(losses(sharded), losses(single), atol=1e-5)
    for a, b in zip(params(sharded), params(single)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_no_deprecated_sharding_apis(repo):
    for path in (repo / "jaxcult").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "jax.experimental.pjit" not in text, path
        assert "with mesh:" not in text, path
