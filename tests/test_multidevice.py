"""The adapter trainer on 8 simulated CPU devices: same losses and parameters as one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_minilm, tiny_model_yaml

pytestmark = needs_minilm

CONFIG = "name: mesh\n" + tiny_model_yaml(heads=4, intermediate=64) + """\
peft: {kind: pfeiffer, reduction_factor: 4}
data: {max_train_examples: 128, max_eval_examples: 16, target_languages: [en, de]}
trainer: {batch_size: 8, eval_batch_size: 16, log_every: 1, steps: 10, eval_every: 10}
schedule: {name: gu, k: 3}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""


def run(tmp: Path, name: str, devices: int, mesh: dict[str, int], *extra: str,
        resume: bool = False) -> Path:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    overrides = [f"mesh.{k}={v}" for k, v in mesh.items()]
    (tmp / "mesh.yaml").write_text(CONFIG)
    head = ["--resume", name] if resume else ["mesh.yaml", "--run-dir", name]
    result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train", *head, *overrides,
                             *extra], cwd=tmp, env=env, capture_output=True, text=True)
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


def test_checkpoint_restores_onto_another_mesh(tmp_path, single):
    import shutil

    first = run(tmp_path, "run", 8, {"data": 8, "fsdp": 1, "tensor": 1}, "checkpoint.every=5")
    shutil.rmtree(first / "checkpoints" / "10")  # as if preempted right after step 5's checkpoint
    (first / "summary.json").unlink()
    resumed = run(tmp_path, "run", 8, {"data": 2, "fsdp": 2, "tensor": 2}, resume=True)
    np.testing.assert_allclose(losses(resumed), losses(single), atol=1e-5)
    for a, b in zip(params(resumed), params(single)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fsdp_shards_the_frozen_backbone():
    script = textwrap.dedent("""
        import jax, numpy as np
        from flax import nnx
        from jaxcult.config import MeshConfig
        from jaxcult.models import EncoderConfig, build
        from jaxcult.sharding import make_mesh, place_variables
        config = MeshConfig(data=1, fsdp=8, tensor=1)
        mesh = make_mesh(config)
        model = build(EncoderConfig(vocab_size=4096, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=128))
        state = place_variables(nnx.state(model, nnx.Param), mesh, config.rules)
        leaves = jax.tree.leaves(state)
        total = sum(x.nbytes for x in leaves)
        small = sum(x.nbytes for x in leaves if x.ndim < 2)
        for device in mesh.devices.flat:
            held = sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                       if s.device == device)
            assert held <= total / 8 + small, (device, held, total)
        print("OK", total, small)
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_deprecated_sharding_apis(repo):
    for path in (repo / "jaxcult").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "jax.experimental.pjit" not in text, path
        assert "with mesh:" not in text, path
