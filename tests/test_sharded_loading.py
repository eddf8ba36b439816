"""Checkpoint tensors land directly with their target sharding on an 8-device CPU mesh."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, jax.numpy as jnp, torch, transformers
    from flax import nnx
    from jaxcult import load_pretrained
    from jaxcult.config import MeshConfig
    from jaxcult.sharding import make_mesh, logical_to_spec
    from jaxcult.models.layers import axes_of
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
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(path=tmp_path / "bert")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
