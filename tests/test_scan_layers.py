"""`model.scan_layers`: the layer stack as one `lax.scan` over stacked parameters gives the
unrolled model's losses and gradients (decoder with LoRA, encoder with adapters, dropout on,
with remat and gradient accumulation), generates the same tokens, exports per-layer files, and
refuses what it cannot run (schedules opening layers one by one, layers of different
structure)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm, tiny_random_model
from flax import nnx

from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.models.layer_stack import LayerStack, StackError, stack_layers, unstack_model
from jaxcult.trainers.program import StepOptions, TrainProgram

DECODER = [
    "task.name=causal_lm", *tiny_random_model("llama", layers=3, kv_heads=2),
    "data.max_train_examples=8", "data.max_eval_examples=8", "data.target_languages=[en]",
    "trainer.batch_size=4", "peft.kind=lora", "peft.lora_dropout=0.1", "schedule.name=standard",
]
ENCODER = [
    *tiny_random_model("bert", layers=3), "model.dropout=0.1",
    "data.max_train_examples=8", "data.max_eval_examples=8", "trainer.batch_size=4",
    "peft.kind=pfeiffer", "peft.reduction_factor=4", "schedule.name=lpft",
]


def built(overrides: list[str]):
    from jaxcult.run.build import build_run

    run = build_run(load_config(None, overrides))
    batch = {k: jnp.asarray(v[:4]) for k, v in run.data.train.arrays.items()}
    return run.parts, run.model_program(), batch


def flat_grads(parts, program, batch, remat: str = "none", accum: int = 1) -> dict[str, np.ndarray]:
    step = TrainProgram(program, None, None, StepOptions(remat=remat, grad_accum=accum))
    mask = jnp.ones(len(parts.groups), bool)
    (loss, _), grads = jax.jit(step._grads)(parts.params, parts.frozen, batch, jax.random.key(3), mask)
    flat = {".".join(map(str, path)): np.asarray(v[...])
            for group in grads.values() for path, v in nnx.to_flat_state(group)}
    return float(loss), flat


def stacked_like(unrolled: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """Per-layer arrays `...layers.{i}.rest` stacked as `...layers.stacked.rest`."""
    out = {}
    for path, value in unrolled.items():
        if ".layers.0." in f".{path}":
            prefix, rest = f".{path}".split(".layers.0.", 1)
            out[f"{prefix}.layers.stacked.{rest}".lstrip(".")] = np.stack(
                [unrolled[f"{prefix}.layers.{i}.{rest}".lstrip(".")] for i in range(layers)])
        elif ".layers." not in f".{path}":
            out[path] = value
    return out


@needs_minilm
@pytest.mark.parametrize("overrides, remat, accum", [
    (DECODER, "none", 1), pytest.param(DECODER, "layer", 2, marks=pytest.mark.slow),  # ~5 s
    (ENCODER, "layer_save_dots", 1)],
    ids=["decoder-lora", "decoder-remat-accum", "encoder-adapters-remat"])
def test_scanned_layers_give_the_unrolled_losses_and_gradients(overrides, remat, accum):
    parts, program, batch = built(overrides)
    scan_parts, scan_program, _ = built([*overrides, "model.scan_layers=true"])
    assert any(g in scan_parts.groups for g in ("lora/layers", "adapter/task/layers"))
    assert scan_parts.total_params == parts.total_params
    loss, grads = flat_grads(parts, program, batch, remat, accum)
    scan_loss, scan_grads = flat_grads(scan_parts, scan_program, batch, remat, accum)
    assert scan_loss == pytest.approx(loss, abs=1e-5)
    expected = stacked_like(grads, 3)
    assert scan_grads.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_allclose(scan_grads[path], value, rtol=0, atol=1e-5, err_msg=path)


def tiny_llama(layers: int = 2):
    from jaxcult import models

    config = models.config_from_hf({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
                                    "num_hidden_layers": layers, "num_attention_heads": 4,
                                    "num_key_value_heads": 2, "intermediate_size": 64}, "test", [], None)
    return models.build(config, seed=0)


def test_a_scanned_decoder_prefills_and_decodes_as_the_unrolled_one():
    """The KV-cache path runs a stack's layers as slices: same logits, same cache."""
    from jaxcult.models.decoder import KVCache

    plain, scanned = tiny_llama(3), tiny_llama(3)
    scanned.layers = stack_layers(list(scanned.layers))
    ids = jnp.array([[5, 6, 7, 8], [9, 10, 11, 12]])

    def prefill_then_step(model):
        out = model(ids, cache=KVCache.empty(model.config, 2, 8))
        step = model(jnp.array([[3], [4]]), cache=out.cache)
        return out.logits, step.logits, step.cache.keys

    for ours, theirs in zip(jax.tree.leaves(jax.jit(prefill_then_step)(scanned)),
                            jax.tree.leaves(jax.jit(prefill_then_step)(plain))):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_layers_of_different_structure_are_refused_by_name():
    model = tiny_llama()
    model.layers[1].output_adapter = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(StackError, match=r"layers.1 differs .*'output_adapter'"):
        stack_layers(list(model.layers))


@needs_minilm
def test_schedules_opening_layers_apart_are_refused():
    from jaxcult.run.build import resolve_plugins

    with pytest.raises(UserError, match="model.scan_layers: schedule.name=fun trains some layers"):
        resolve_plugins(load_config(None, [*ENCODER, "schedule.name=fun", "model.scan_layers=true"]))


@needs_minilm
def test_a_stacked_model_unstacks_to_the_same_parameters():
    parts, _, _ = built(DECODER)
    scan_parts, _, _ = built([*DECODER, "model.scan_layers=true"])
    model = nnx.merge(scan_parts.graphdef, *scan_parts.params.values(), scan_parts.frozen)
    assert isinstance(model.layers, LayerStack)
    unstacked = unstack_model(model)
    plain = nnx.merge(parts.graphdef, *parts.params.values(), parts.frozen)
    ours = dict(nnx.to_flat_state(nnx.state(unstacked)))
    theirs = dict(nnx.to_flat_state(nnx.state(plain)))
    assert ours.keys() == theirs.keys()
    for path, variable in theirs.items():
        np.testing.assert_array_equal(ours[path][...], variable[...])
        assert ours[path].get_metadata().get("axes") == variable.get_metadata().get("axes")
