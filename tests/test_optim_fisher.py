"""Masked optimizer semantics and Fisher estimators against brute-force references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcult import fisher
from jaxcult.config import OptimizerConfig
from jaxcult.trainers.optim import base_optimizer, group_state, masked_groups


class MaskedGroupOptimizer:
    """The masked per-group transformation, applied: update(...) -> (params, state)."""

    def __init__(self, config: OptimizerConfig, groups):
        self.groups = groups
        self.transform = masked_groups(base_optimizer(config), groups,
                                       optax.constant_schedule(config.lr),
                                       global_count=config.adam_count == "global")
        self.init = self.transform.init

    def update(self, grads, state, params, mask, lr, step):
        del lr  # constant: the schedule gives it
        updates, state = self.transform.update(grads, state, params, mask=mask, step=step)
        return optax.apply_updates(params, updates), state

    def state_of(self, state, params, name):
        return group_state(state, params, self.groups, name)


def params_and_grads(seed):
    rng = np.random.default_rng(seed)
    params = {"a": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
              "b": {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    return params, grads


def test_frozen_group_is_bit_identical_and_count_starts_at_unfreeze():
    opt = MaskedGroupOptimizer(OptimizerConfig(name="adamw", lr=0.1, weight_decay=0.5), ["a", "b"])
    params, _ = params_and_grads(0)
    state = opt.init(params)
    frozen_b = jax.tree.map(np.asarray, (params["b"], opt.state_of(state, params, "b")))
    for step in range(3):
        _, grads = params_and_grads(step + 1)
        params, state = opt.update(grads, state, params, jnp.array([True, False]), 0.1, step)
    assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), y),
                                     (params["b"], opt.state_of(state, params, "b")), frozen_b))
    # unfreeze b: its first update equals a fresh AdamW's first update (count starts at 1)
    _, grads = params_and_grads(9)
    before = np.asarray(params["b"]["w"])
    params, state = opt.update(grads, state, params, jnp.array([True, True]), 0.1, 3)
    g = np.asarray(grads["b"]["w"])
    m, v = 0.1 * g, 0.001 * g * g
    expected = before * (1 - 0.1 * 0.5) - 0.1 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
    np.testing.assert_allclose(np.asarray(params["b"]["w"]), expected, rtol=1e-5, atol=1e-6)


def test_pytorch_adamw_with_requires_grad_toggling():
    torch = pytest.importorskip("torch")
    opt = MaskedGroupOptimizer(OptimizerConfig(name="adamw", lr=5e-4, weight_decay=0.01), ["a", "b"])
    params, _ = params_and_grads(0)
    state = opt.init(params)
    tparams = {k: torch.nn.Parameter(torch.tensor(np.asarray(v["w"]))) for k, v in params.items()}
    topt = torch.optim.AdamW(list(tparams.values()), lr=5e-4, weight_decay=0.01)
    for step in range(20):
        _, grads = params_and_grads(100 + step)
        mask = [True, step >= 10]
        params, state = opt.update(grads, state, params, jnp.array(mask), 5e-4, step)
        topt.zero_grad(set_to_none=True)
        for (name, p), active in zip(tparams.items(), mask):
            p.grad = torch.tensor(np.asarray(grads[name]["w"])) if active else None
        topt.step()
    for name in params:
        np.testing.assert_allclose(np.asarray(params[name]["w"]), tparams[name].detach().numpy(),
                                   atol=1e-6)


def linear_model():
    rng = np.random.default_rng(0)
    params = {"g1": {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)},
              "g2": {"b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}}
    batch = {"x": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
             "labels": jnp.asarray(rng.integers(0, 3, size=6))}

    def log_probs(p, b):
        return jax.nn.log_softmax(b["x"] @ p["g1"]["w"] + p["g2"]["b"], -1)

    return params, batch, log_probs


ORDER = ["g1", "g2"]


def unweighted(log_probs):
    return lambda p, b: (log_probs(p, b), None)


def brute_force_trace(params, batch, log_probs):
    """Exact E_x E_{y~p(y|x)} sum_theta (d log p(y|x)/d theta)^2 per group, by loops."""
    totals = np.zeros(2)
    n = batch["x"].shape[0]
    for i in range(n):
        example = {"x": batch["x"][i:i + 1]}
        probs = np.exp(np.asarray(log_probs(params, example))[0])
        for c in range(3):
            grads = jax.grad(lambda p: log_probs(p, example)[0, c])(params)
            sq = [sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads[k])) for k in ("g1", "g2")]
            totals += probs[c] * np.array(sq)
    return totals / n


def test_sampled_matches_exact_expectation_within_monte_carlo():
    params, batch, log_probs = linear_model()
    exact = brute_force_trace(params, batch, log_probs)
    fn = jax.jit(lambda p, b, k: fisher.batch_trace("sampled", unweighted(log_probs), p, b, k, ORDER))
    values = [fn(params, batch, jax.random.key(i)) for i in range(800)]
    estimate = np.asarray(fisher.combine("sampled", values))
    np.testing.assert_allclose(estimate, exact, rtol=0.05)


def test_argmax_batch_is_the_official_definition():
    params, batch, log_probs = linear_model()
    labels = np.asarray(log_probs(params, batch)).argmax(-1)

    def loss(p):
        lp = log_probs(p, batch)
        return -jnp.mean(lp[jnp.arange(6), labels])

    grads = jax.grad(loss)(params)
    direct = [float(jnp.sum(grads[k][n] ** 2)) / 6 for k, n in (("g1", "w"), ("g2", "b"))]
    one = fisher.batch_trace("argmax_batch", unweighted(log_probs), params, batch, jax.random.key(0),
                             ORDER)
    np.testing.assert_allclose(np.asarray(one), direct, rtol=1e-6)
    two = fisher.combine("argmax_batch", [one, one])
    np.testing.assert_allclose(np.asarray(two), 2 * np.asarray(direct), rtol=1e-6)


def test_empirical_uses_gold_labels():
    params, batch, log_probs = linear_model()
    value = np.asarray(fisher.batch_trace("empirical", unweighted(log_probs), params, batch,
                                          jax.random.key(0), ORDER))
    expected = np.zeros(2)
    for i in range(6):
        g = jax.grad(lambda p: log_probs(p, {"x": batch["x"][i:i + 1]})[0, int(batch["labels"][i])])(params)
        expected += [float(jnp.sum(g["g1"]["w"] ** 2)), float(jnp.sum(g["g2"]["b"] ** 2))]
    np.testing.assert_allclose(value, expected / 6, rtol=1e-5)


def sequence_model():
    """Two output positions per example (like span start/end or two LM tokens), the second
    weighted 0 for some examples (padding)."""
    params, batch, _ = linear_model()
    batch["weights"] = jnp.asarray([[1, 1], [1, 0], [1, 1], [1, 0], [1, 1], [1, 1]], jnp.float32)
    batch["labels"] = jnp.stack([batch["labels"], (batch["labels"] + 1) % 3], axis=1)

    def log_probs(p, b):
        first = b["x"] @ p["g1"]["w"] + p["g2"]["b"]
        second = jnp.tanh(b["x"]) @ p["g1"]["w"] - p["g2"]["b"]
        return jax.nn.log_softmax(jnp.stack([first, second], 1), -1), b["weights"]

    return params, batch, log_probs


def test_sampled_over_several_positions_matches_exact_expectation():
    """E_x E_{y1,y2 ~ p} (d/dθ sum_t w_t log p(y_t|x))^2 by enumerating all 9 label pairs."""
    params, batch, log_probs = sequence_model()
    exact = np.zeros(2)
    for i in range(6):
        example = {k: v[i:i + 1] for k, v in batch.items() if k != "labels"}
        lp, w = log_probs(params, example)
        probs = np.exp(np.asarray(lp))[0]
        for a in range(3):
            for b in range(3):
                def ll(p, a=a, b=b):
                    lp, w = log_probs(p, example)
                    return w[0, 0] * lp[0, 0, a] + w[0, 1] * lp[0, 1, b]
                g = jax.grad(ll)(params)
                exact += probs[0, a] * probs[1, b] * np.array(
                    [float(jnp.sum(g["g1"]["w"] ** 2)), float(jnp.sum(g["g2"]["b"] ** 2))])
    exact /= 6
    fn = jax.jit(lambda p, b, k: fisher.batch_trace("sampled", log_probs, p, b, k, ORDER))
    values = [fn(params, batch, jax.random.key(i)) for i in range(800)]
    np.testing.assert_allclose(np.asarray(fisher.combine("sampled", values)), exact, rtol=0.05)
    empirical = np.asarray(fisher.batch_trace("empirical", log_probs, params, batch,
                                              jax.random.key(0), ORDER))
    expected = np.zeros(2)
    for i in range(6):
        example = {k: v[i:i + 1] for k, v in batch.items() if k != "labels"}
        y = np.asarray(batch["labels"][i])

        def gold(p):
            lp, w = log_probs(p, example)
            return w[0, 0] * lp[0, 0, y[0]] + w[0, 1] * lp[0, 1, y[1]]
        g = jax.grad(gold)(params)
        expected += [float(jnp.sum(g["g1"]["w"] ** 2)), float(jnp.sum(g["g2"]["b"] ** 2))]
    np.testing.assert_allclose(empirical, expected / 6, rtol=1e-5)


def test_global_adam_count_uses_the_global_step():
    params, _ = params_and_grads(0)
    per_group = MaskedGroupOptimizer(OptimizerConfig(name="adam", lr=0.1), ["a", "b"])
    global_count = MaskedGroupOptimizer(OptimizerConfig(name="adam", lr=0.1, adam_count="global"),
                                        ["a", "b"])
    _, grads = params_and_grads(1)
    mask = jnp.array([True, True])
    first, _ = per_group.update(grads, per_group.init(params), params, mask, 0.1, 5)
    later, _ = global_count.update(grads, global_count.init(params), params, mask, 0.1, 5)
    g = np.asarray(grads["b"]["w"])
    # per-group: bias-corrected first step moves by lr * sign(g); global: count 6 shrinks it
    np.testing.assert_allclose(np.asarray(first["b"]["w"]) - np.asarray(params["b"]["w"]),
                               -0.1 * np.sign(g), rtol=1e-4)
    m_hat = 0.1 * g / (1 - 0.9 ** 6)
    v_hat = 0.001 * g * g / (1 - 0.999 ** 6)
    np.testing.assert_allclose(np.asarray(later["b"]["w"]) - np.asarray(params["b"]["w"]),
                               -0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-4)


def hf_adamw_reference(params, grads_per_step, lr, wd, eps=1e-6, b1=0.9, b2=0.999, decay=None):
    """transformers' old `AdamW.step` (correct_bias=True), written out from its definition."""
    torch = pytest.importorskip("torch")
    p = {k: torch.tensor(np.asarray(v)) for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    for step, grads in enumerate(grads_per_step, 1):
        for k in p:
            g = torch.tensor(np.asarray(grads[k]))
            m[k].mul_(b1).add_(g, alpha=1 - b1)
            v2[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v2[k].sqrt().add_(eps)
            step_size = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            p[k].addcdiv_(m[k], denom, value=-step_size)
            if wd > 0 and (decay is None or decay[k]):
                p[k].add_(p[k], alpha=-lr * wd)
    return {k: v.numpy() for k, v in p.items()}


def test_adamw_hf_matches_transformers_definition_and_differs_from_torch_adamw():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(10)]
    config = OptimizerConfig(name="adamw_hf", lr=5e-4, weight_decay=0.01, eps=1e-6,
                             decay_params="matrices")
    opt = base_optimizer(config)
    state, ours = opt.init(params), params
    for g in grads:
        updates, state = opt.update({k: jnp.asarray(v) for k, v in g.items()}, state, ours)
        ours = optax.apply_updates(ours, updates)
    reference = hf_adamw_reference(params, grads, 5e-4, 0.01, decay={"w": True, "b": False})
    for k in params:
        np.testing.assert_allclose(np.asarray(ours[k]), reference[k], atol=1e-6)
    tparams = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in params.items()}
    topt = torch.optim.AdamW(tparams.values(), lr=5e-4, weight_decay=0.01, eps=1e-6)
    for g in grads:
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        topt.step()
    gap = max(np.abs(reference[k] - tparams[k].detach().numpy()).max() for k in params)
    assert gap > 1e-5  # the two optimizers really differ (eps placement, decay of biases)


def test_decay_mask_spares_biases_for_torch_adamw_too():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zero = {k: jnp.zeros_like(v) for k, v in params.items()}
    opt = base_optimizer(OptimizerConfig(name="adamw", lr=0.1, weight_decay=0.5,
                                         decay_params="matrices"))
    updates, _ = opt.update(zero, opt.init(params), params)
    assert float(updates["b"].max()) == 0.0 and float(updates["w"].max()) < 0


class _Vocabulary:
    """A tokenizer stand-in: the build only checks its size (no tokenizer asset needed)."""

    def __len__(self) -> int:
        return 64


def eleven_layer_model(estimator: str):
    from jaxcult.config_loading import load_config
    from jaxcult.run.build import build_model
    from jaxcult.tasks import resolve_task
    from jaxcult.trainers.program import ModelProgram

    config = load_config(None, [
        "model.name=random", "model.max_length=8", "peft.reduction_factor=2",
        "model.overrides={model_type: bert, vocab_size: 64, hidden_size: 8, num_hidden_layers: 11,"
        " num_attention_heads: 2, intermediate_size: 8}", f"fisher.estimator={estimator}"])
    task = resolve_task(config.task, ("a", "b", "c"))
    parts = build_model(config, task, _Vocabulary())
    rng = np.random.default_rng(1)
    batch = {"input_ids": jnp.asarray(rng.integers(5, 64, size=(6, 8)), jnp.int32),
             "attention_mask": jnp.ones((6, 8), jnp.int32),
             "token_type_ids": jnp.zeros((6, 8), jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 3, size=6), jnp.int32)}
    return config, parts, ModelProgram(task, None, parts.graphdef, parts.groups), batch


def per_group_by_name(program, parts, batch, labels):
    """Each group's trace from per-example gradients of the raw model, read out of the gradient
    dict by each group's *name* (no ordering of dicts or groups is involved), averaged over
    the examples."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def ll(params, example, label):
        one = jax.tree.map(lambda x: x[None], example)
        return jax.nn.log_softmax(program.outputs(params, parts.frozen, one))[0, label]

    grads = jax.jit(jax.vmap(jax.grad(ll), in_axes=(None, 0, 0)))(parts.params, inputs, labels)
    return {name: float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads[name]))) / len(labels)
            for name in parts.groups}


@pytest.fixture(scope="module")
def eleven_layers():
    config, parts, program, batch = eleven_layer_model("empirical")
    traced = np.asarray(program.make_fisher("empirical")(parts.params, parts.frozen, batch,
                                                         jax.random.key(0)))
    return parts, traced, per_group_by_name(program, parts, batch, batch["labels"])


def test_traces_are_attributed_to_the_right_group_with_eleven_layers(eleven_layers):
    """With 11 layers `layer_10` sorts before `layer_2`: a mix-up of group order shows here."""
    parts, traced, independent = eleven_layers
    assert parts.groups[3:5] == ["adapter/task/layer_2", "adapter/task/layer_3"]
    np.testing.assert_allclose(traced, [independent[g] for g in parts.groups], rtol=2e-4)


def test_fun_decision_matches_an_independent_per_example_computation(eleven_layers):
    from jaxcult.config import ScheduleConfig
    from jaxcult.schedules import resolve

    parts, traced, independent = eleven_layers
    schedule = resolve("fun")(parts.groups, parts.layer_groups, ScheduleConfig(name="fun", k=1))
    start = schedule.start()
    decision = schedule.decide(1, start.mask, lambda: dict(zip(parts.groups, map(float, traced))))
    frozen = [g for g in parts.layer_groups if not start.mask[parts.groups.index(g)]]
    assert decision.events[0]["groups"] == [max(frozen, key=independent.get)]


def test_warmup_ratio_counts_steps_as_transformers_and_excludes_warmup_steps():
    from pydantic import ValidationError

    from jaxcult.trainers.optim import lr_schedule, warmup_steps

    config = OptimizerConfig(lr=2e-4, warmup_ratio=0.03)
    assert warmup_steps(config, 100) == 3 and warmup_steps(config, 101) == 4  # ceil, as HF
    schedule = lr_schedule(config, 100)
    assert [float(schedule(s)) for s in (0, 1, 3, 50)] == pytest.approx([0, 2e-4 / 3, 2e-4, 2e-4])
    with pytest.raises(ValidationError, match="warmup_steps or optimizer.warmup_ratio, not both"):
        OptimizerConfig(warmup_steps=5, warmup_ratio=0.1)
