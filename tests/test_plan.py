"""`jaxcult plan`: the train step compiled for shapes only, XLA's per-device memory beside the
analytic estimate (within 10% on tiny float32 configs), the CLI with simulated devices, the
built-in architecture table, each task's planned batch against a real one, and the refusals."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import needs_minilm, tiny_random_model

from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.hub.known_configs import known_config
from jaxcult.run.plan import mesh_overrides, parse_memory, simulate_devices

SIZES = dict(hidden=64, layers=4, intermediate=256, max_length=128)
ENCODER = [*tiny_random_model("bert", **SIZES), "trainer.batch_size=16"]
DECODER = ["task.name=causal_lm", *tiny_random_model("llama", vocab=4096, kv_heads=2, **SIZES),
           "data.target_languages=[en]", "trainer.batch_size=16", "peft.kind=lora"]


@needs_minilm
@pytest.mark.parametrize("overrides", [
    ENCODER, DECODER, [*DECODER, "model.remat=layer"],
    [*DECODER, "model.remat=layer", "model.scan_layers=true", "schedule.name=standard"]],
    ids=["encoder-adapters", "decoder-lora", "decoder-lora-remat", "decoder-lora-scan-remat"])
def test_analytic_figures_are_within_10_percent_of_the_compiler(overrides):
    from jaxcult.run.plan_figures import make_plan

    plan = make_plan(load_config(None, overrides), None)
    analytic, compiled = plan.analytic, plan.compiled
    # parameters, optimizer state and batch are the step's arguments
    assert analytic["arguments"] == pytest.approx(compiled["arguments"], rel=0.01)
    assert analytic["frozen"] > 0 and analytic["optimizer"] == pytest.approx(2 * analytic["trainable"],
                                                                             rel=0.01)
    assert analytic["temporaries"] == pytest.approx(compiled["temporaries"], rel=0.10)


def test_the_built_in_table_gives_the_published_sizes():
    from flax import nnx

    from jaxcult import models
    from jaxcult.hub.loading import abstract_module

    published = {"meta-llama/Llama-3.2-1B-Instruct": 1_235_814_400,
                 "Qwen/Qwen2.5-0.5B-Instruct": 494_032_768,
                 "FacebookAI/xlm-roberta-base": 278_043_648}
    for name, count in published.items():
        model = abstract_module(models.config_from_hf(known_config(name), name))
        leaves = nnx.to_flat_state(nnx.state(model, nnx.Param)).leaves
        assert sum(int(np.prod(v.shape)) for v in leaves) == count, name
    assert known_config("no/such-model") is None


@needs_minilm
@pytest.mark.parametrize("overrides, file", [
    (ENCODER, None), (ENCODER, "experiments/xcopa-e5.yaml"),
    (["task.name=causal_lm", *tiny_random_model("llama", kv_heads=2, **SIZES),
      "data.target_languages=[en]"], None),
    ([*ENCODER, "task.name=masked_lm"], None)], ids=["classification", "choice", "lm", "mlm"])
def test_planned_batches_have_the_structure_of_real_ones(repo, overrides, file):
    from conftest import SHARED_DATA

    from jaxcult.run.build import build_run

    if file and not SHARED_DATA.exists():   # the COPA config reads the shared data
        pytest.skip("../shared/data is not present")
    config = load_config(repo / file if file else None,
                         [*overrides, "data.max_train_examples=8", "data.max_eval_examples=8"])
    built = build_run(config)
    real = built.data.train.arrays
    planned = built.plugins.task.plan_batch(4, 128)
    assert set(planned) == set(built.plugins.task.batch_keys) <= set(real)
    for key, shape in planned.items():
        assert shape.shape[0] == 4 and len(shape.shape) == real[key].ndim, key
        assert shape.shape[1:-1] == real[key].shape[1:-1], key   # choices / pairs
        assert shape.dtype == real[key].dtype, key


def test_command_line_sizes_and_meshes_are_checked():
    assert parse_memory("80GiB") == 80 * 2**30 and parse_memory("1.5 GB") == 1_500_000_000
    with pytest.raises(UserError, match="--device-memory: '80 gallons'"):
        parse_memory("80 gallons")
    assert mesh_overrides(None, "data=2,fsdp=4") == (
        ["mesh.data=2", "mesh.fsdp=4", "mesh.tensor=1"], 8)
    with pytest.raises(UserError, match="--mesh: 'pipeline=2' is not AXIS=SIZE"):
        mesh_overrides(None, "pipeline=2")
    with pytest.raises(UserError, match="needs --devices"):
        mesh_overrides(None, "data=-1")
    with pytest.raises(UserError, match="JAX already started here with 1 device"):
        simulate_devices(jax.device_count() + 2)
    from jaxcult.run.plan_figures import make_plan

    with pytest.raises(UserError, match="trainer.vectorize_seeds trains several"):
        make_plan(load_config(None, ["trainer.seeds=[0, 1]", "trainer.vectorize_seeds=true"]), None)


def run_plan(*args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "jaxcult.cli", "plan", *args], env=env,
                            capture_output=True, text=True, timeout=timeout)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result, time.perf_counter() - started, peak_kib


@needs_minilm
def test_the_command_simulates_devices_and_gives_a_verdict():
    result, _, _ = run_plan(*DECODER, "--mesh", "data=2,fsdp=2", "--device-memory", "1MiB")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1} over 4 simulated CPU device(s)" in out
    assert "analytic" in out and "compiler (XLA)" in out and "compile:" in out
    assert "verdict: does not fit in 1.0 MiB per device" in out and "suggestion:" in out
    bad, _, _ = run_plan(*DECODER, "--devices", "3")
    assert bad.returncode == 2 and "trainer.batch_size: 16 is not divisible by the 3" in bad.stderr


@pytest.mark.slow   # ~1 min here
def test_the_8b_clca_config_plans_without_weights_in_bounded_time_and_memory(repo):
    config = repo / "experiments" / "clca" / "train" / "llama-3.1-8b.yaml"
    result, seconds, peak_kib = run_plan(str(config), "--devices", "8", "--device-memory", "80GiB")
    assert result.returncode == 0, result.stderr[-2000:]
    assert seconds <= 600 and peak_kib <= 8 * 2**20
    assert "8,031,965,184 parameters, nf4 base" in result.stdout
    assert "compiler (XLA)" in result.stdout and "verdict:" in result.stdout
