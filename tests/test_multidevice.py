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
from conftest import needs_minilm, tiny_model_yaml, xla_flags

pytestmark = needs_minilm

COMMON = """\
data: {max_train_examples: 128, max_eval_examples: 16, target_languages: [en, de]}
trainer: {batch_size: 8, eval_batch_size: 16, log_every: 1, steps: 10, eval_every: 10}
schedule: {name: gu, k: 3}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
"""
CONFIGS = {
    # the adapter trainer on a tiny encoder
    "adapter": "name: mesh\n" + tiny_model_yaml(heads=4, intermediate=64) + COMMON
    + "peft: {kind: pfeiffer, reduction_factor: 4}\n",
    # the LM trainer on a tiny decoder: LoRA plus a fully trained (saved) lm_head
    "lm": "name: mesh\n" + COMMON + """\
model:
  name: random
  tokenizer: minilm-l6
  max_length: 16
  overrides: {model_type: llama, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,
              num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64}
task: {name: causal_lm}
peft: {kind: lora, target_modules: [q, v, down], modules_to_save: [lm_head]}
""",
    # preference optimisation: DPO with the adapter-off reference, both forwards sharded
    "dpo": "name: mesh\n" + COMMON.replace("schedule: {name: gu, k: 3}", "schedule: {name: "
                                            "standard}\nfisher: {track_every: 0}").replace(
        "data: {max_train_examples: 128, max_eval_examples: 16, target_languages: [en, de]}",
        "data: {name: preference_jsonl, manual_dir: pairs, eval_split: validation}") + """\
model:
  name: random
  tokenizer: minilm-l6
  max_length: 24
  overrides: {model_type: llama, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,
              num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64}
task: {name: preference, objective: dpo, beta: 0.5}
peft: {kind: lora, target_modules: [q, v, down]}
optimizer: {lr: 0.02}
""",
}
PAIRS = [{"prompt": f"question {i} about custom {i % 5}", "chosen": f" a kind answer {i}",
          "rejected": f" no {i % 3}", "language": "en"} for i in range(40)]
CONFIG = CONFIGS["adapter"]


def run(tmp: Path, name: str, devices: int, mesh: dict[str, int], *extra: str,
        resume: bool = False, config: str = CONFIG) -> Path:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices > 1:
        env["XLA_FLAGS"] = xla_flags(devices)
    overrides = [f"mesh.{k}={v}" for k, v in mesh.items()]
    (tmp / "mesh.yaml").write_text(config)
    if "preference_jsonl" in config:
        (tmp / "pairs").mkdir(exist_ok=True)
        for split in ("train", "validation"):
            (tmp / "pairs" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                                  for r in PAIRS))
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
        "leaves = [np.asarray(x) for x in jax.tree.leaves(tree['params'])]\n"
        "np.savez(sys.argv[2], *leaves)\n")
    out = path / "params.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8))
    result = subprocess.run([sys.executable, "-c", script, str(path / "checkpoints" / "10" / "state"),
                             str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    """One-device reference runs, made once per trainer kind."""
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = run(tmp_path_factory.mktemp(f"single-{kind}"), "run", 1, {"data": 1},
                              config=CONFIGS[kind])
        return cache[kind]

    return get


@pytest.fixture
def single(singles):
    return singles("adapter")


MESHES = {"data8": {"data": 8, "fsdp": 1, "tensor": 1}, "fsdp8": {"data": 1, "fsdp": 8, "tensor": 1},
          "d2f2t2": {"data": 2, "fsdp": 2, "tensor": 2}}  # d2f2t2: all three axes at once


# The default run has d2f2t2 for the LM trainer (DPO, the same trainer with a second forward,
# runs every mesh in the slow suite); the adapter trainer trains on data8 and then on
# d2f2t2 in test_checkpoint_restores_onto_another_mesh.
@pytest.mark.parametrize("mesh, kind", [
    pytest.param(mesh, kind, id=f"{name}-{kind}",
                 marks=() if (name, kind) == ("d2f2t2", "lm") else pytest.mark.slow)
    for name, mesh in MESHES.items() for kind in ("adapter", "lm", "dpo")])
def test_mesh_matches_single_device(tmp_path, singles, mesh, kind):
    sharded = run(tmp_path, "run", 8, mesh, config=CONFIGS[kind])
    reference = singles(kind)
    np.testing.assert_allclose(losses(sharded), losses(reference), atol=1e-5)
    for a, b in zip(params(sharded), params(reference)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow   # ~30 s; tests/test_scan_layers.py checks the gradients on one device
def test_scanned_layers_on_a_mesh_train_as_the_unrolled_model_on_one_device(tmp_path):
    """Stacked arrays sharded on d2f2t2 (the layer axis whole), LoRA plus a saved lm_head."""
    (tmp_path / "unrolled").mkdir()
    (tmp_path / "scanned").mkdir()
    unrolled = run(tmp_path / "unrolled", "run", 1, {"data": 1}, "schedule.name=standard",
                   config=CONFIGS["lm"])
    scanned = run(tmp_path / "scanned", "run", 8, MESHES["d2f2t2"], "schedule.name=standard",
                  "model.scan_layers=true", config=CONFIGS["lm"])
    np.testing.assert_allclose(losses(scanned), losses(unrolled), atol=1e-5)


@pytest.mark.slow   # ~35 s; the default suite keeps the mesh equality tests
def test_checkpoint_restores_onto_another_mesh(tmp_path, single):
    import shutil

    first = run(tmp_path, "run", 8, MESHES["data8"], "checkpoint.every=5")
    shutil.rmtree(first / "checkpoints" / "10")  # as if preempted right after step 5's checkpoint
    (first / "summary.json").unlink()
    resumed = run(tmp_path, "run", 8, MESHES["d2f2t2"], resume=True)
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
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_deprecated_sharding_apis(repo):
    for path in (repo / "jaxcult").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "jax.experimental.pjit" not in text, path
        assert "with mesh:" not in text, path


def test_block_boundaries_carry_activation_sharding_constraints():
    """Under a mesh, embeddings and every layer output are pinned to the batch axes."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from flax import nnx
        from jaxcult.config import MeshConfig
        from jaxcult.models import DecoderConfig, EncoderConfig, build
        from jaxcult.sharding import activation_rules, make_mesh
        config = MeshConfig(data=4, fsdp=2, tensor=1)
        mesh = make_mesh(config)
        for arch in (EncoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                                   num_attention_heads=2, intermediate_size=32),
                     DecoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                                   num_attention_heads=2, intermediate_size=32)):
            graphdef, state = nnx.split(build(arch))
            def forward(state, ids):
                out = nnx.merge(graphdef, state)(ids)
                return getattr(out, "last_hidden_state", getattr(out, "logits", None))
            ids = jnp.ones((8, 5), jnp.int32)
            plain = jax.jit(forward).lower(state, ids).as_text()
            with jax.set_mesh(mesh), activation_rules(config.rules):
                text = jax.jit(forward).lower(state, ids).as_text()
            pinned = '[{"data", "fsdp"}, {}, {}]>'
            constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
            assert "sharding_constraint" not in plain
            assert len(constraints) == 4 and all(pinned in line for line in constraints), constraints
        print("OK")
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow   # ~26 s
def test_two_processes_match_one_process(tmp_path):
    """Multi-controller run (2 processes x 2 CPU devices, gloo) = one process with 4 devices:
    each process loads its half of every global batch; only process 0 writes the run files."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    (tmp_path / "mesh.yaml").write_text(CONFIGS["lm"])
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2))
    command = [sys.executable, "-m", "jaxcult.cli", "train", "mesh.yaml", "--run-dir", "multi",
               "mesh.data=4", "mesh.distributed=true", f"mesh.coordinator_address=localhost:{port}",
               "mesh.num_processes=2", "trainer.steps=4"]
    workers = [subprocess.Popen([*command, f"mesh.process_id={i}"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "average (no source)" in outputs[0][0] and "average" not in outputs[1][0]
    single = run(tmp_path, "single", 4, {"data": 4}, "trainer.steps=4", config=CONFIGS["lm"])
    np.testing.assert_allclose(losses(tmp_path / "multi"), losses(single), atol=1e-5)
    summaries = [json.loads((p / "summary.json").read_text()) for p in (tmp_path / "multi", single)]
    for lang, values in summaries[1]["metrics"].items():
        np.testing.assert_allclose(summaries[0]["metrics"][lang]["loss"], values["loss"], atol=1e-5)


def test_dry_run_prints_mesh_group_shardings_and_memory(tmp_path):
    (tmp_path / "mesh.yaml").write_text(CONFIG)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8))
    result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train", "mesh.yaml", "--dry-run",
                             "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "mesh: {'data': 2, 'fsdp': 2, 'tensor': 2} over 8 cpu device(s)" in out
    assert "adapter/task/layer_1:" in out and "frozen backbone:" in out
    assert "('embed', 'mlp') -> ('fsdp', 'tensor')" in out
    for line in ("frozen parameters", "optimizer state (Adam)", "activations (estimate)"):
        assert line in out
    assert not list(tmp_path.glob("runs"))  # nothing trained, nothing written
