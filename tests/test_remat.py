"""Per-layer rematerialisation (`model.remat`): the same losses and gradients as the plain step,
with and without the truncated backward, for an encoder with adapters and a decoder with LoRA
(dropout on both); and it takes effect: the compiled step keeps fewer temporaries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm, tiny_random_model

from jaxcult.config_loading import load_config
from jaxcult.trainers.program import StepOptions, TrainProgram
from jaxcult.truncation import rematerialising

DECODER = [
    "task.name=causal_lm", *tiny_random_model("llama", layers=3, kv_heads=2),
    "data.max_train_examples=8", "data.max_eval_examples=8", "data.target_languages=[en]",
    "trainer.batch_size=4", "peft.kind=lora", "peft.lora_dropout=0.1",
]
ENCODER = [
    *tiny_random_model("bert", layers=3), "model.dropout=0.1",
    "data.max_train_examples=8", "data.max_eval_examples=8", "trainer.batch_size=4",
    "peft.kind=pfeiffer", "peft.reduction_factor=4",
]


def built_with_batch(overrides: list[str]):
    from jaxcult.run.build import build_run

    built = build_run(load_config(None, overrides))
    batch = {k: jnp.asarray(v[:4]) for k, v in built.data.train.arrays.items()}
    return built.parts, built.model_program(), batch


def grads_of(parts, model, batch, remat: str, truncated: bool):
    program = TrainProgram(model, None, None, StepOptions(remat=remat))
    mask = jnp.ones(len(parts.groups), bool) if truncated else None
    return jax.jit(program._grads)(parts.params, parts.frozen, batch, jax.random.key(5), mask)


@needs_minilm
@pytest.mark.parametrize("overrides, remat, truncated", [
    (DECODER, "layer", False), (DECODER, "layer", True), (ENCODER, "layer_save_dots", True)],
    ids=["decoder-layer", "decoder-layer-truncated", "encoder-dots-truncated"])
def test_remat_gives_the_plain_losses_and_gradients(overrides, remat, truncated):
    parts, model, batch = built_with_batch(overrides)
    (loss, _), grads = grads_of(parts, model, batch, "none", truncated)
    (remat_loss, _), remat_grads = grads_of(parts, model, batch, remat, truncated)
    assert float(remat_loss) == pytest.approx(float(loss), abs=1e-6)
    for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@needs_minilm
@pytest.mark.slow   # ~10 s; exactness stays in the default suite
def test_remat_keeps_fewer_temporaries_in_the_truncated_step():
    """With the truncated backward (the default) each layer's recomputation sits inside its
    backward branch, so XLA keeps only the layer inputs; 8 x 128 tokens, 6 layers."""
    wide = [o for o in ENCODER if not o.startswith("model.")] + [
        *tiny_random_model("bert", hidden=64, layers=6, intermediate=256), "model.dropout=0.1"]
    parts, model, _ = built_with_batch(wide)
    batch = {"input_ids": jnp.ones((8, 128), jnp.int32), "attention_mask": jnp.ones((8, 128), jnp.int32),
             "token_type_ids": jnp.zeros((8, 128), jnp.int32), "labels": jnp.zeros(8, jnp.int32)}
    mask = jnp.ones(len(parts.groups), bool)

    def temporaries(remat: str) -> int:
        program = TrainProgram(model, None, None, StepOptions(remat=remat))
        lowered = jax.jit(program._grads).lower(parts.params, parts.frozen, batch,
                                                jax.random.key(0), mask)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    assert temporaries("layer") < 0.8 * temporaries("none")


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown remat policy 'everything'"):
        with rematerialising("everything"):
            pass
