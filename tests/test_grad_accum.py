"""Gradient accumulation: micro-batch i takes rows i, i + accum, ... (each device's own rows on
a mesh), and the accumulated step equals the full-batch step where the loss is a mean over
examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.config_loading import load_config
from jaxcult.trainers.program import StepOptions, TrainProgram, micro_batches


@needs_minilm
def test_accumulated_micro_batches_give_the_full_batch_step():
    from jaxcult.run.build import build_run

    built = build_run(load_config(None, [
        "model.name=random", "model.tokenizer=minilm-l6", "model.max_length=32",
        "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,"
        " num_attention_heads: 4, intermediate_size: 64}", "data.max_train_examples=8",
        "data.max_eval_examples=8", "trainer.batch_size=8", "peft.kind=pfeiffer"]))
    parts, model = built.parts, built.model_program()
    batch = {k: jnp.asarray(v[:8]) for k, v in built.data.train.arrays.items()}
    seen = []

    def recording(accum: int):
        program = TrainProgram(model, None, None, StepOptions(grad_accum=accum))
        loss = program._loss

        def spy(params, frozen, micro, key, mask):   # no dropout (the head has its own)
            seen.append(micro["input_ids"])
            return loss(params, frozen, micro, None, mask)

        program._loss = spy
        return jax.jit(program._grads)(parts.params, parts.frozen, batch, jax.random.key(0), None)

    (loss, _), grads = recording(1)
    (accumulated_loss, _), accumulated = recording(4)
    assert float(accumulated_loss) == pytest.approx(float(loss), abs=1e-6)
    for a, b in zip(jax.tree.leaves(accumulated), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert seen[-1].shape == (2, batch["input_ids"].shape[1])   # traced once inside the scan


def test_micro_batches_take_every_accum_th_row():
    rows = micro_batches({"x": jnp.arange(8)[:, None]}, 4)["x"]
    assert rows.shape == (4, 2, 1)
    np.testing.assert_array_equal(rows[:, :, 0], [[0, 4], [1, 5], [2, 6], [3, 7]])
