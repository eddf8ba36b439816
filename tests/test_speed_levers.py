"""The speed levers change no result: truncated backward, one-forward Fisher, length buckets,
in-step tr(F) (docs/performance.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcult.config import EvaluatorConfig
from jaxcult.config_loading import load_config
from jaxcult.data.batching import (
    BatchIterator,
    EpochBatches,
    LengthBuckets,
    Split,
    eval_batch_lengths,
    eval_batches,
    eval_rows,
    fitted_bucket_sizes,
)
from jaxcult.errors import UserError
from jaxcult.eval.base import Evaluator
from jaxcult.schedules import resolve
from jaxcult.trainers.evaluation import evaluate
from jaxcult.trainers.program import ModelProgram, StepOptions, TrainProgram

LAYERS = 6


class _Vocabulary:
    def __len__(self) -> int:
        return 64


def layered(kind: str, *extra: str):
    from jaxcult.run.build import build_model
    from jaxcult.tasks import resolve_task

    config = load_config(None, [
        "model.name=random", "model.max_length=8", f"peft.kind={kind}", *extra,
        f"model.overrides={{model_type: bert, vocab_size: 64, hidden_size: 8, num_hidden_layers: "
        f"{LAYERS}, num_attention_heads: 2, intermediate_size: 8}}"])
    task = resolve_task(config.task, ("a", "b", "c"))
    parts = build_model(config, task, _Vocabulary())
    rng = np.random.default_rng(1)
    batch = {"input_ids": jnp.asarray(rng.integers(5, 64, size=(6, 8)), jnp.int32),
             "attention_mask": jnp.ones((6, 8), jnp.int32).at[:, 6:].set(0),
             "token_type_ids": jnp.zeros((6, 8), jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 3, size=6), jnp.int32)}
    return parts, ModelProgram(task, None, parts.graphdef, parts.groups), batch


def schedule_masks(groups: list[str], layer_groups: list[str]) -> list[np.ndarray]:
    """Every mask that each built-in schedule passes through on this model (FUN with a fake
    tr(F) that favours a middle layer, so it opens groups out of order)."""
    masks = []
    fisher = {g: float(-abs(i - LAYERS // 2)) for i, g in enumerate(layer_groups)}
    for name, options in [("standard", {}), ("gu", {}), ("lpft", {}), ("fun", {}),
                          ("random", {}), ("fixed", {"order": "bottom_up"})]:
        schedule = resolve(name)(groups, layer_groups, resolve(name).Settings(name=name, k=1, **options),
                                 seed=4)
        mask = schedule.start().mask
        masks.append(mask)
        for step in range(1, LAYERS + 2):
            decision = schedule.decide(step, mask, lambda: fisher)
            if decision is not None:
                mask = decision.mask
                masks.append(mask)
    unique = {m.tobytes(): m for m in masks}
    return list(unique.values())


@pytest.mark.parametrize("kind,extra", [
    ("pfeiffer", ("peft.reduction_factor=2",)),
    pytest.param("lora", (), marks=pytest.mark.slow), pytest.param("full", (), marks=pytest.mark.slow)])
def test_truncated_backward_is_exact_for_every_schedule_and_compiles_once(kind, extra):
    parts, model, batch = layered(kind, *extra)
    program = TrainProgram(model, None, None, StepOptions())
    grads = jax.jit(program._grads)
    key = jax.random.key(3)  # dropout on: the truncated layers must draw the same masks
    (loss, _), plain = grads(parts.params, parts.frozen, batch, key, None)
    masks = schedule_masks(parts.groups, parts.layer_groups)
    assert len(masks) > LAYERS
    for mask in masks:
        (cut_loss, _), cut = grads(parts.params, parts.frozen, batch, key, jnp.asarray(mask))
        assert abs(float(cut_loss) - float(loss)) <= 1e-6
        for trainable, name in zip(mask, parts.groups):
            if trainable:
                for a, b in zip(jax.tree.leaves(cut[name]), jax.tree.leaves(plain[name])):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    assert grads._cache_size() == 2  # the plain step and one truncated step for every mask


def equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in it (jit, cond branches, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def dots_after_dce(jaxpr) -> int:
    """Matrix products left once dead code is removed (as XLA does when compiling)."""
    from jax._src.interpreters import partial_eval as pe  # no public DCE entry point

    live, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
    return sum(e.primitive.name == "dot_general" for e in equations(live))


def test_truncated_branches_skip_the_work_below():
    """The backward is a `lax.switch` per layer: one compiled program whose frozen-layer branch
    holds no matrix products (the work below the lowest trainable group is not run)."""
    parts, model, batch = layered("pfeiffer", "peft.reduction_factor=2")
    program = TrainProgram(model, None, None, StepOptions())
    mask = jnp.zeros(len(parts.groups), bool).at[0].set(True)
    jaxpr = jax.make_jaxpr(program._grads)(parts.params, parts.frozen, batch, None, mask)
    found = [eqn for eqn in equations(jaxpr.jaxpr) if eqn.primitive.name == "cond"]
    assert len(found) == LAYERS
    for cond in found:
        nothing, own, full = cond.params["branches"]
        count = [dots_after_dce(b.jaxpr) for b in (nothing, own, full)]
        assert count[0] == 0 and 0 < count[1] < count[2]


def test_fisher_runs_one_forward():
    """The batch estimator's program has the matrix products of one forward and one backward,
    exactly as many as a plain gradient of the loss."""
    parts, model, batch = layered("pfeiffer", "peft.reduction_factor=2")

    def dots(fn, *args) -> int:
        text = jax.jit(fn).lower(*args).as_text()
        return text.count("stablehlo.dot_general")

    fisher = model.make_fisher("argmax_batch")
    loss = jax.grad(lambda p: model.task.loss(model.outputs(p, parts.frozen, batch), batch)[0])
    assert dots(fisher, parts.params, parts.frozen, batch, jax.random.key(0)) == \
        dots(loss, parts.params)


def split_of(lengths: list[int], width: int = 12, choices: int = 0) -> Split:
    rows = len(lengths)
    mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = mask * (np.arange(rows)[:, None] + 5)
    arrays = {"input_ids": ids, "attention_mask": mask, "labels": np.arange(rows) % 2}
    if choices:
        arrays = {k: np.repeat(v[:, None], choices, 1) if k != "labels" else v
                  for k, v in arrays.items()}
    return Split(arrays, "t")


def test_length_buckets_cut_padding_only():
    split = split_of([3, 5, 9, 4, 12, 2, 7, 6])
    split.buckets = LengthBuckets((4, 8), ("input_ids", "attention_mask"))
    shapes, seen = [], []
    for batch, valid, examples in eval_batches(split, 3):
        rows = batch["input_ids"].shape[1]
        longest = int(batch["attention_mask"][valid].sum(1).max())
        assert rows == next(s for s in (4, 8, 12) if s >= longest)  # the split's 12 is the last
        full = split.arrays["input_ids"][examples]
        np.testing.assert_array_equal(batch["input_ids"][valid], full[:, :rows])
        np.testing.assert_array_equal(full[:, rows:], 0)  # only padding was removed
        shapes.append(rows)
        seen.extend(examples)
    assert shapes == [12, 8, 4]  # longest first: in split order they would be 12, 12, 8
    assert sorted(seen) == list(range(8))


def test_evaluation_lengths_are_each_scored_rows_batch_longest():
    """What evaluation's fitted buckets weigh: each computed row (padding rows too) at the
    length of its batch's longest example, as `eval_batches` cuts it with a bucket per length."""
    split = split_of([3, 5, 9, 4, 12, 2, 7, 6, 1, 8, 11])
    split.buckets = LengthBuckets(tuple(range(1, 13)), ("input_ids", "attention_mask"))
    cut = np.concatenate([np.full(len(valid), batch["input_ids"].shape[-1])
                          for batch, valid, _ in eval_batches(split, 4)])
    assert cut.tolist() == [12] * 4 + [7] * 4 + [3] * 4  # 11 examples in 3 batches of 4 rows
    np.testing.assert_array_equal(eval_batch_lengths(split, 4), cut)


def test_evaluation_rows_spread_the_examples_over_the_batches():
    assert [eval_rows(n, 64) for n in (1, 8, 9, 64, 65, 100, 128, 129, 500)] == \
        [8, 8, 16, 64, 40, 56, 64, 48, 64]
    assert eval_rows(5, 3) == 3  # never more than the batch size
    split = split_of([3, 5, 9, 4, 12, 2, 7, 6, 1, 8])
    batches = list(eval_batches(split, 9))  # no buckets: split order, 2 batches of 8 rows
    assert [len(valid) for _, valid, _ in batches] == [8, 8]
    assert np.concatenate([e for _, _, e in batches]).tolist() == list(range(10))
    assert batches[1][1].tolist() == [True, True] + [False] * 6


class _KeptLogits(Evaluator):
    """Keeps every example's logits (as evaluation hands them over, in split order)."""

    def device_outputs(self, outputs, batch):
        return {"logits": outputs}

    def metrics(self, results, split):
        self.logits = results["logits"]
        return {"accuracy": float((self.logits.argmax(-1) == split.arrays["labels"]).mean())}


def test_length_sorted_evaluation_gives_each_example_its_own_outputs_in_split_order():
    parts, plain, _ = layered("pfeiffer", "peft.reduction_factor=2")
    evaluator = _KeptLogits(EvaluatorConfig(), None)
    program = ModelProgram(plain.task, evaluator, parts.graphdef, parts.groups)
    rng = np.random.default_rng(4)
    mask = (np.arange(8)[None] < rng.integers(1, 9, size=21)[:, None]).astype(np.int32)
    arrays = {"input_ids": rng.integers(5, 64, size=(21, 8)) * mask, "attention_mask": mask,
              "token_type_ids": np.zeros_like(mask), "labels": rng.integers(0, 3, size=21)}
    in_order = evaluate(program, parts.params, parts.frozen, Split(arrays, "t"), 8)
    reference = evaluator.logits
    buckets = LengthBuckets((2, 4), ("input_ids", "attention_mask", "token_type_ids"))
    assert [e.tolist() for _, _, e in eval_batches(Split(arrays, "t", buckets=buckets), 8)] != \
        [list(range(8)), list(range(8, 16)), list(range(16, 21))]  # really reordered
    bucketed = evaluate(program, parts.params, parts.frozen, Split(arrays, "t", buckets=buckets), 8)
    np.testing.assert_allclose(evaluator.logits, reference, rtol=0, atol=1e-6)
    assert bucketed == in_order


def test_buckets_follow_the_global_batch_and_multiple_choice():
    split = split_of([3, 9, 2, 2], choices=2)
    assert split.lengths.tolist() == [3, 9, 2, 2]
    split.buckets = LengthBuckets((4,), ("input_ids", "attention_mask"))
    halves = [BatchIterator(split, 4, seed=0, process_index=i, process_count=2) for i in (0, 1)]
    first = [next(h) for h in halves]
    assert first[0]["input_ids"].shape == first[1]["input_ids"].shape == (2, 2, 12)


def test_shape_samples_are_one_batch_of_each_shape_the_iterator_brings():
    lengths = np.random.default_rng(2).integers(1, 13, size=40)
    split = split_of(lengths.tolist())
    split.buckets = LengthBuckets((4, 8), ("input_ids", "attention_mask"))

    def shapes_from_batch_3(count):
        iterator = BatchIterator(split, 6, seed=3, length_grouping=2, keep_remainder=True)
        for _ in range(3):
            next(iterator)
        return iterator, {next(iterator)["input_ids"].shape for _ in range(count)}

    iterator, coming = shapes_from_batch_3(7)  # an epoch's worth
    assert len(coming) >= 3  # several lengths, and the epoch's smaller last batch
    assert sorted(b["input_ids"].shape for b in iterator.shape_samples(3)) == sorted(coming)
    iterator, first_two = shapes_from_batch_3(2)
    assert {b["input_ids"].shape for b in iterator.shape_samples(3, 2)} == first_two


def test_length_grouping_sorts_within_windows_and_keeps_every_example():
    lengths = np.random.default_rng(0).integers(1, 60, size=103)
    plan = EpochBatches(103, 8, seed=1, lengths=lengths, window=4)
    for epoch in range(2):
        order = plan.permutation(epoch)
        assert sorted(order.tolist()) == list(range(103))
        for t in range(plan.per_epoch):
            rows = plan.global_rows(epoch * plan.per_epoch + t)
            window = order[(t // 4) * 32:(t // 4 + 1) * 32]
            # a batch is a run of the window sorted by length
            assert np.all(lengths[rows][1:] >= lengths[rows][:-1]) and set(rows) <= set(window)
    assert not np.array_equal(plan.permutation(0), plan.permutation(1))


def test_fitted_buckets_pad_least_of_all_choices():
    """Against brute force over every choice of at most `count` sizes (the longest row's length
    always one of them): the fitted sizes compute the fewest tokens."""
    import itertools

    def tokens(lengths, sizes):
        return sum(min(s for s in sizes if s >= n) for n in lengths)

    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 30, size=int(rng.integers(1, 40)))
        count = int(rng.integers(1, 5))
        fitted = fitted_bucket_sizes(lengths, count)
        values = sorted(set(lengths.tolist()))
        best = min(tokens(lengths, (*chosen, values[-1])) for r in range(count)
                   for chosen in itertools.combinations(values[:-1], r))
        assert len(fitted) <= count and fitted[-1] == values[-1]
        assert tokens(lengths, fitted) == best
    assert fitted_bucket_sizes([5, 5, 9], 4) == (5, 9)   # never more sizes than lengths


def test_length_settings_are_checked():
    with pytest.raises(UserError, match="length_grouping has no effect"):
        load_config(None, ["data.length_grouping=4"])
    with pytest.raises(UserError, match="length_buckets"):
        load_config(None, ["data.length_buckets=[0]"])
    with pytest.raises(UserError, match="bucket_count has no effect"):
        load_config(None, ["data.length_buckets=auto", "data.bucket_count=3"])
    from jaxcult.run.build import length_buckets

    assert length_buckets("auto", 64, ("input_ids",)).sizes == (16, 32, 48)
    with pytest.raises(UserError, match="exceeds model.max_length"):
        length_buckets([16, 256], 128, ("input_ids",))


def test_in_step_ema_settings_are_checked():
    with pytest.raises(UserError, match="fisher.window has no effect"):
        load_config(None, ["fisher.window=3"])
    with pytest.raises(UserError, match="num_batches has no effect"):
        load_config(None, ["schedule.name=fun", "fisher.estimator=in_step_ema",
                           "fisher.num_batches=5"])
    config = load_config(None, ["schedule.name=fun", "fisher.estimator=in_step_ema",
                                "fisher.window=3", "fisher.ema=0.5"])
    from jaxcult.trainers.fisher_tracker import InStepEstimate

    estimate = InStepEstimate(config, ["head", "a", "b"], lambda step: step % 5 == 0)
    assert [s for s in range(11) if estimate.tracks(s)] == [2, 3, 4, 7, 8, 9]
    for step, value in [(2, 1.0), (3, 2.0), (4, 4.0)]:
        estimate.observe(step, jnp.full(3, value))
    traces = estimate(None, 5)
    assert traces["a"] == pytest.approx((1 * 0.25 + 2 * 0.5 + 4 * 1) / 1.75)
    with pytest.raises(UserError, match="no training step"):
        estimate(None, 20)


def test_compute_dtype_reaches_the_activations():
    """`model.compute_dtype` is the activation dtype (float32 parameters, bfloat16 compute):
    the loss moves by bfloat16 rounding, not by nothing and not by more."""
    losses = []
    for dtype in ("float32", "bfloat16"):
        parts, model, batch = layered("pfeiffer", "peft.reduction_factor=2",
                                      f"model.compute_dtype={dtype}")
        loss, _ = model.task.loss(model.outputs(parts.params, parts.frozen, batch), batch)
        losses.append(float(loss))
    assert losses[0] != losses[1] and abs(losses[0] - losses[1]) < 0.05


def test_compute_dtype_reaches_a_pretrained_backbone(tiny_chat_model):
    """A pretrained model loads with `model.dtype` parameters and `model.compute_dtype`
    activations (the compute dtype was once swallowed by the loader's parameter-dtype
    argument, so pretrained models always computed in float32)."""
    from jaxcult.run.build import _backbone
    config = load_config(None, [f"model.name={tiny_chat_model[0]}", "task.name=causal_lm",
                                "model.dtype=float32", "model.compute_dtype=bfloat16"])
    backbone, _ = _backbone(config, None)
    assert (backbone.config.dtype, backbone.config.param_dtype) == ("bfloat16", "float32")
    assert backbone(jnp.arange(1, 9)[None]).logits.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_products_accumulate_in_float32_forward_and_backward(dtype):
    """Below 32 bits, `matmul` equals the float32-accumulated product cast back, and its
    gradients equal those of the same float32 products (each cast back); float32 is plain
    `jnp.dot`, bit for bit."""
    from jaxcult.models.products import matmul
    keys = jax.random.split(jax.random.key(3), 3)
    x, w = (jax.random.normal(k, s).astype(dtype) for k, s in zip(keys, ((16, 48), (48, 24))))
    grad = jax.random.normal(keys[2], (16, 24)).astype(dtype)
    wide = jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32))
    assert jnp.array_equal(matmul(x, w, dtype), wide.astype(dtype))
    _, pullback = jax.vjp(lambda a, b: matmul(a, b, dtype), x, w)
    dx, dw = pullback(grad)
    g32 = grad.astype(jnp.float32)
    assert jnp.array_equal(dx, (g32 @ w.astype(jnp.float32).T).astype(dtype))
    assert jnp.array_equal(dw, (x.astype(jnp.float32).T @ g32).astype(dtype))
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    assert jnp.array_equal(matmul(x32, w32, jnp.float32), jnp.dot(x32, w32))
