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
