"""AdapterHub interop both ways, against the real `adapters` library (slow: it runs in its own
environment, created by scripts/adapters_env.py on first use).

Pfeiffer (per-layer reduction factors), Houlsby (gelu) and an invertible (NICE) language adapter
stacked under a task adapter, on a tiny XLM-R: adapters saved by `adapters` import into jaxcult
with the same logits, and adapters exported by jaxcult load into `adapters` with the same logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcult.hub import adapterhub
from jaxcult.hub.pretrained import load_pretrained
from jaxcult.models.classifier import SequenceClassifier

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))


def reference(mode: str, work: Path) -> None:
    from adapters_env import adapters_python

    result = subprocess.run([str(adapters_python()), str(HERE / "_adapterhub_reference.py"),
                             mode, str(work)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def classifier(work: Path, num_labels: int = 3) -> SequenceClassifier:
    encoder, _ = load_pretrained(str(work / "base"))
    return SequenceClassifier(encoder, num_labels, pooling="cls", dropout_rate=0.0)


def run(model, inputs) -> np.ndarray:
    return np.asarray(model(jnp.asarray(inputs["input_ids"]), jnp.asarray(inputs["attention_mask"])))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("adapterhub")
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 120, size=(4, 9))
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    ids[2, 6:], mask[2, 6:] = 1, 0  # padding (XLM-R pad id 1)
    np.savez(work / "inputs.npz", input_ids=ids, attention_mask=mask)
    reference("create", work)
    return work


def test_adapterhub_adapters_import_with_the_same_logits(work):
    inputs = np.load(work / "inputs.npz")
    expected = np.load(work / "reference.npz")
    for name in ("pf", "hb"):
        model = classifier(work)
        hub = adapterhub.read_adapterhub(work / name)
        adapterhub.install(model.encoder, hub, "task")
        adapterhub.load_weights(model, hub, "task", with_head=True)
        np.testing.assert_allclose(run(model, inputs), expected[name], atol=1e-4)
    model = classifier(work)
    pf = adapterhub.read_adapterhub(work / "pf")
    adapterhub.install(model.encoder, pf, "task")
    adapterhub.load_weights(model, pf, "task", with_head=True)
    adapterhub.install(model.encoder, adapterhub.read_adapterhub(work / "lang"), "language")
    np.testing.assert_allclose(run(model, inputs), expected["lang+pf"], atol=1e-4)


def randomise(module: nnx.Module, seed: int) -> None:
    """Non-zero values in every adapter and head parameter (fresh up-projections are zero)."""
    key = jax.random.key(seed)
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        dotted = ".".join(map(str, path))
        if "adapter" in dotted or dotted.startswith("head."):
            key, sub = jax.random.split(key)
            variable[...] = variable[...] + 0.2 * jax.random.normal(sub, variable.shape)


def test_jaxcult_exports_load_in_adapters_with_the_same_logits(work):
    from jaxcult.config import PeftConfig
    from jaxcult.peft.bottleneck import add_bottleneck_adapters
    from jaxcult.peft.invertible import NICEAdapter

    inputs = np.load(work / "inputs.npz")
    expected = {}
    configs = {"pf": PeftConfig(kind="pfeiffer", reduction_factor=[4, 8, 4], leave_out=[2]),
               "hb": PeftConfig(kind="houlsby", reduction_factor=4, non_linearity="tanh")}
    (work / "exported").mkdir()
    for seed, (name, config) in enumerate(configs.items()):
        model = classifier(work)
        add_bottleneck_adapters(model.encoder, config, seed=seed)
        randomise(model, seed)
        expected[name] = run(model, inputs)
        adapterhub.export_adapterhub(model, work / "exported" / name, name=name,
                                     head=adapterhub.classification_head(model, name))
        if name == "pf":  # MAD-X: a language adapter (with NICE) under this task adapter
            lang = classifier(work)
            add_bottleneck_adapters(lang.encoder, PeftConfig(kind="pfeiffer", reduction_factor=2))
            lang.encoder.embedding_adapter = NICEAdapter(32, reduction_factor=2)
            randomise(lang.encoder, 7)
            for layer in lang.encoder.layers:  # task adapters stand in the language slot
                layer.output_adapter = adapterhub.AdapterStack(layer.output_adapter, None)
            adapterhub.export_adapterhub(lang.encoder, work / "exported" / "lang", name="lang",
                                         which="language")
            stacked = classifier(work)
            add_bottleneck_adapters(stacked.encoder, config, seed=seed)
            nnx.update(stacked, nnx.state(model, nnx.Param))
            adapterhub.install(stacked.encoder,
                               adapterhub.read_adapterhub(work / "exported" / "lang"), "language")
            expected["lang+pf"] = run(stacked, inputs)
    (work / "exports.json").write_text(json.dumps(list(configs)))
    reference("score", work)
    scored = np.load(work / "scored.npz")
    for name, value in expected.items():
        np.testing.assert_allclose(scored[name], value, atol=1e-4, err_msg=name)


def test_language_adapter_trained_here_loads_in_adapters_with_equal_mlm_logits(work, tmp_path):
    """MAD-X language-adapter training: Pfeiffer rf 2 + NICE on a masked-LM run, exported with
    `jaxcult export`; `adapters` loads it with its MLM head and gives the same logits."""
    from jaxcult.cli import main
    from jaxcult.hub.pretrained import load_tokenizer
    from jaxcult.run.restore import load_run_model

    reference("mlm-base", work)
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), f"model.name={work / 'bert-base'}",
                 "model.tokenizer=minilm-l6", "model.max_length=32", "task.name=masked_lm",
                 "data.name=jaxcult_multilingual_text", "data.source_language=de",
                 "data.target_languages=[de]", "data.eval_split=validation",
                 "data.max_eval_examples=16", "peft.kind=pfeiffer", "peft.reduction_factor=2",
                 "peft.invertible=true", "schedule.name=standard", "optimizer.lr=0.01",
                 "trainer.steps=4", "trainer.batch_size=8", "logging.tensorboard=false",
                 "logging.progress=off", "checkpoint.async_save=false"]) == 0
    assert main(["export", str(run_dir), "--format", "adapterhub", "--name", "de",
                 "--out", str(work / "language-adapter")]) == 0
    encoded = load_tokenizer("minilm-l6")(
        ["Gestern hat der Laden Rabatt auf eine Jacke.", "Der Zug fährt heute später ab."],
        padding="longest", return_tensors="np")
    np.savez(work / "mlm-inputs.npz", input_ids=encoded["input_ids"],
             attention_mask=encoded["attention_mask"])
    _, model = load_run_model(run_dir)
    nice = model.encoder.embedding_adapter.F.up.kernel[...]
    assert float(jnp.abs(nice).max()) > 0  # trained: a fresh NICE adapter is the identity
    expected = np.asarray(model(jnp.asarray(encoded["input_ids"]),
                                jnp.asarray(encoded["attention_mask"])))
    reference("mlm-score", work)
    np.testing.assert_allclose(np.load(work / "mlm-scored.npz")["logits"], expected, atol=1e-4)
