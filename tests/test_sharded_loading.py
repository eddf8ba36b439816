"""Checkpoint tensors land directly with their target sharding on an 8-device CPU mesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import xla_flags

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, jax.numpy as jnp, torch, transformers
    from flax import nnx
    from jaxcult import load_pretrained
    from jaxcult.config import MeshConfig
    from jaxcult.sharding import make_mesh, logical_to_spec
    from jaxcult.sharding import axes_of
    assert jax.device_count() == 8
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128,
                                  max_position_embeddings=64)
    transformers.BertModel(cfg).eval().save_pretrained(r"{path}")
    config = MeshConfig(data=1, fsdp=4, tensor=2)
    mesh = make_mesh(config)
    model, _ = load_pretrained(r"{path}", mesh=mesh, rules=config.rules)
    plain, _ = load_pretrained(r"{path}")
    sharded_leaves = 0
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var[...]
        expected = logical_to_spec(axes_of(var), value.shape, config.rules, mesh)
        assert value.sharding.spec == expected, (path, value.sharding.spec, expected)
        if any(s is not None for s in expected):
            sharded_leaves += 1
            shard = value.addressable_shards[0].data
            assert shard.size < value.size, path
    assert sharded_leaves > 10
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 96, size=(2, 8)))
    a = np.asarray(model(ids).last_hidden_state)
    b = np.asarray(plain(ids).last_hidden_state)
    assert np.abs(a - b).max() < 1e-5
    print("OK", sharded_leaves)
""")


def test_load_places_each_tensor_with_its_sharding(tmp_path):
    env = dict(os.environ, XLA_FLAGS=xla_flags(8),
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(path=tmp_path / "bert")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, torch, transformers
    from flax import nnx
    from jaxcult.run import single
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128)
    transformers.BertModel(cfg).eval().save_pretrained(r"{path}")
    SMALL = 16 * 1024  # LayerNorms and biases stay replicated: "small leaves"
    seen = {{"arrays": 0, "too_big": [], "recording": False}}

    def record(tree):
        for a in jax.tree.leaves(tree):
            if seen["recording"] and isinstance(a, jax.Array) and a.nbytes > SMALL:
                seen["arrays"] += 1
                held = max(s.data.nbytes for s in a.addressable_shards)
                if held > a.nbytes // 8:
                    seen["too_big"].append((a.shape, held))
        return tree

    for module, name in ((jax, "device_put"), (jnp, "asarray"), (jnp, "array")):
        original = getattr(module, name)
        setattr(module, name, lambda *a, _f=original, **k: record(_f(*a, **k)))
    build = single.build_run

    def recorded_build(config, mesh):
        seen["recording"] = True
        built = build(config, mesh)
        seen["recording"] = False
        leaves = jax.tree.leaves(built.parts.frozen)
        total = sum(x.nbytes for x in leaves)
        small = sum(x.nbytes for x in leaves if x.nbytes <= SMALL)
        for device in mesh.devices.flat:
            held = sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                       if s.device == device)
            assert held <= total / 8 + small, (device, held, total)
        return built

    single.build_run = recorded_build
    from jaxcult.cli import main
    code = main(["train", "--run-dir", r"{run}", "model.name={path}", "model.tokenizer=minilm-l6",
                 "model.max_length=16", "mesh.data=1", "mesh.fsdp=8", "trainer.steps=2",
                 "trainer.batch_size=8", "data.max_train_examples=32", "data.max_eval_examples=8",
                 "data.target_languages=[en]", "logging.tensorboard=false", "logging.progress=off",
                 "checkpoint.async_save=false", "fisher.num_batches=1"])
    assert code == 0
    print(json.dumps({{"arrays": seen["arrays"], "too_big": seen["too_big"]}}))
""")


@pytest.mark.slow   # ~16 s (a subprocess on 8 devices); per-tensor placement stays in the default suite
def test_train_loads_the_backbone_straight_into_its_shards(tmp_path):
    """`jaxcult train` on an fsdp=8 mesh: every large array created while loading holds at most
    1/8 of its bytes per device, and the frozen backbone never exceeds its share plus the small
    replicated leaves on any device."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(8),
               JAX_PLATFORMS="cpu")
    script = TRAIN_SCRIPT.format(path=tmp_path / "bert", run=tmp_path / "run")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["arrays"] >= 6 and seen["too_big"] == []  # embeddings and the FFN kernels
