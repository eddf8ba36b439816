"""Learning-dynamics probes: each measure against a direct computation on a tiny model (dense
Hessian, CKA's kernel formula, hand-computed noise scale), and probes in a training run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm, tiny_model_yaml
from jax.flatten_util import ravel_pytree
from test_speed_levers import layered

from jaxcult.cli import main
from jaxcult.probes import measures


@pytest.fixture(scope="module")
def tiny():
    parts, program, batch = layered("pfeiffer", "peft.reduction_factor=2")

    def loss(params, b):
        return program.task.loss(program.outputs(params, parts.frozen, b), b)[0]

    return parts, jax.jit(loss), batch


@pytest.mark.slow   # ~20 s idle; the probes-in-a-run test keeps hessian_top in the default suite
def test_power_iteration_finds_the_dense_hessians_top_eigenvalue(tiny):
    parts, loss, batch = tiny
    # two adapters whose top eigenvalue stands apart (the head's spectrum at initialisation has
    # near-equal eigenvalues 0.7474-0.7491 that no power iteration separates in a few hundred steps)
    for group in (parts.layer_groups[1], parts.layer_groups[-1]):
        flat, unravel = ravel_pytree(parts.params[group])
        hessian = jax.jit(jax.hessian(lambda x: loss({**parts.params, group: unravel(x)}, batch)))(flat)
        eigenvalues = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
        top, radius = measures.hessian_extremes(loss, parts.params, group, batch, iters=100,
                                                key=jax.random.key(0))
        assert top == pytest.approx(eigenvalues[-1], rel=1e-3), (group, flat.size)
        assert radius == pytest.approx(np.abs(eigenvalues).max(), rel=1e-3), (group, flat.size)


def test_gradient_norms_and_update_ratios_equal_direct_computation(tiny):
    parts, loss, batch = tiny
    grads = jax.grad(loss)(parts.params, batch)
    direct = [np.sqrt(sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads[name])))
              for name in parts.groups]
    np.testing.assert_allclose(measures.group_norms(measures.mean_grads(loss, parts.params, [batch]),
                                                    parts.groups), direct, rtol=1e-5)
    moved = jax.tree.map(lambda p, g: p - 0.1 * g, parts.params, grads)
    ratios = measures.update_ratios(parts.params, moved, parts.groups)
    for name, ratio in zip(parts.groups, ratios):
        before = np.concatenate([np.ravel(x) for x in jax.tree.leaves(parts.params[name])])
        after = np.concatenate([np.ravel(x) for x in jax.tree.leaves(moved[name])])
        assert ratio == pytest.approx(np.linalg.norm(after - before) / np.linalg.norm(before),
                                      rel=1e-5)


def test_noise_scale_by_hand():
    grads = [{"a": jnp.array([1.0, 0.0]), "b": jnp.array([2.0])},
             {"a": jnp.array([0.0, 1.0]), "b": jnp.array([2.0])}]
    found = measures.noise_scale(grads, ["a", "b"], batch_size=4)
    # a: E|G_b|^2 = 1, |G_big|^2 = 0.5; |G|^2 = (8*0.5 - 4*1) / 4 = 0; tr(S) = 0.5 / (1/4 - 1/8) = 4
    assert found["grad_sq"][0] == pytest.approx(0.0) and found["trace_cov"][0] == pytest.approx(4.0)
    assert np.isnan(found["b_simple"][0])                      # |G|^2 not positive: unknown
    # b: both batches agree, no noise: |G|^2 = 4, tr(S) = 0, B_simple = 0
    assert (found["grad_sq"][1], found["trace_cov"][1], found["b_simple"][1]) == \
        (pytest.approx(4.0), pytest.approx(0.0), pytest.approx(0.0))


def test_linear_cka_equals_the_kernel_formula_and_its_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 3))
    h = np.eye(20) - np.ones((20, 20)) / 20

    def hsic(k, m):
        return np.trace(k @ h @ m @ h)

    k, m = x @ x.T, y @ y.T
    assert measures.linear_cka(x, y) == pytest.approx(hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m)))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert measures.linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)


def test_cka_probe_equals_the_formula_on_the_encoders_own_outputs(tiny):
    from flax import nnx

    from jaxcult.probes import ProbeInput, resolve_probe
    from jaxcult.trainers.probe_runner import encoder_representations

    parts, _, batch = tiny
    program = layered("pfeiffer", "peft.reduction_factor=2")[1]
    other = {**batch, "input_ids": (batch["input_ids"] * 7 + 3) % 59 + 5}  # the "target language"
    cka = resolve_probe("cka")
    probe = cka(cka.Settings(name="cka", examples=6), parts.groups)
    represent = encoder_representations(program, parts.frozen)
    values = probe.measure(ProbeInput(0, parts.params, None, [], jax.random.key(0), represent,
                                      {"en": [batch], "xx": [other]}, "en"))
    assert list(values) == ["xx"] and len(values["xx"]) == 1 + len(parts.layer_groups)
    encoder = nnx.merge(parts.graphdef, *parts.params.values(), parts.frozen).encoder
    mask = np.asarray(batch["attention_mask"], np.float64)[..., None]

    def pooled(hidden):
        return (np.asarray(hidden, np.float64) * mask).sum(1) / mask.sum(1)

    def cka(x, y):  # HSIC form with linear kernels
        h = np.eye(len(x)) - 1 / len(x)
        k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
        return np.sum(k * m) / np.sqrt(np.sum(k * k) * np.sum(m * m))

    for name, run in (("embeddings", lambda b: encoder.embed(b["input_ids"], b["token_type_ids"])),
                      (f"layer_{len(parts.layer_groups) - 1}", lambda b: encoder(
                          b["input_ids"], b["attention_mask"], b["token_type_ids"]).last_hidden_state)):
        assert values["xx"][name] == pytest.approx(cka(pooled(run(batch)), pooled(run(other))), rel=1e-4)
    same = probe.measure(ProbeInput(0, parts.params, None, [], jax.random.key(0), represent,
                                    {"en": [batch], "xx": [batch]}, "en"))
    assert all(v == pytest.approx(1.0) for v in same["xx"].values())


CONFIG = "name: probes\n" + tiny_model_yaml() + """\
data: {max_train_examples: 32, max_eval_examples: 16, target_languages: [de]}
trainer: {batch_size: 8, eval_batch_size: 16, steps: 4}
schedule: {name: gu, k: 2}
logging: {tensorboard: false, progress: "off"}
checkpoint: {async_save: false}
probes:
  - {name: grad_norm, every: 2}
  - {name: update_ratio, every: 2}
  - {name: hessian_top, every: 4, options: {iters: 3}}
  - {name: noise_scale, every: 4, batches: 2, batch_size: 4}
  - {name: cka, every: 4, options: {examples: 8}}
"""


@needs_minilm
@pytest.mark.slow   # ~19 s; each probe's numbers stay in the default run
def test_probes_in_a_run_write_probes_jsonl_and_bad_settings_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "probes.yaml").write_text(CONFIG)
    assert main(["train", "probes.yaml", "--run-dir", "run"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run/probes.jsonl").read_text().splitlines()]
    seen = sorted((r["probe"], r["step"]) for r in records)
    assert seen == [("cka", 4), ("grad_norm", 2), ("grad_norm", 4), ("hessian_top", 4),
                    ("noise_scale", 4), ("update_ratio", 4)]   # update_ratio: none at its first
    cka = next(r for r in records if r["probe"] == "cka")
    assert set(cka) == {"step", "probe", "seconds", "de"} and 0 < cka["de"]["layer_0"] <= 1 + 1e-6
    records = [r for r in records if r["probe"] != "cka"]  # its series are languages, not groups
    groups = set(json.loads((tmp_path / "run/summary.json").read_text())["groups"]) \
        if "groups" in json.loads((tmp_path / "run/summary.json").read_text()) else None
    for record in records:
        series = {k: v for k, v in record.items() if k not in ("step", "probe", "seconds")}
        assert series and all(np.isfinite(v) for values in series.values()
                              for v in values.values() if v != "nan")  # B_simple unknown
        if groups is not None:
            assert all(set(values) == groups for values in series.values())
    ratio = next(r for r in records if r["probe"] == "update_ratio")["value"]
    assert ratio["head"] > 0                                   # gu trains the head from step 0
    for bad, message in (("probes=[{name: nope}]", "unknown probe 'nope'"),
                         ("probes=[{name: hessian_top, depth: 2}]",
                          "unknown key 'probes.0.depth' of probe 'hessian_top' (its own keys: iters)"),
                         ("probes=[{name: noise_scale, batches: 1}]", "needs batches >= 2"),
                         ("probes=[{name: cka, options: {targets: 'de,fr'}}]", "cka target 'fr'")):
        assert main(["train", "probes.yaml", "--run-dir", "bad", bad]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad" / "checkpoints").exists()
