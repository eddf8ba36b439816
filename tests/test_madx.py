"""MAD-X in the trainer: a frozen language adapter (with NICE) under trainable task adapters,
swapped per test language and dropped for languages without one; AdapterHub import errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import needs_minilm
from flax import nnx

from jaxcult import models
from jaxcult.config import PeftConfig
from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.hub import adapterhub
from jaxcult.hub.madx import with_language
from jaxcult.peft.bottleneck import AdapterStack, add_bottleneck_adapters
from jaxcult.peft.invertible import NICEAdapter
from jaxcult.run.build import build_run
from jaxcult.run.train import train as train_run
from jaxcult.rundir import check_writable

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37)


def language_adapter(directory, name: str, seed: int, hidden: int = 32) -> None:
    """Write an AdapterHub language adapter (Pfeiffer rf 2 + NICE) with random weights."""
    encoder = models.build(models.EncoderConfig(**{**TINY, "hidden_size": hidden}))
    add_bottleneck_adapters(encoder, PeftConfig(kind="pfeiffer", reduction_factor=2))
    encoder.embedding_adapter = NICEAdapter(hidden, reduction_factor=2)
    key = jax.random.key(seed)
    for path, variable in nnx.to_flat_state(nnx.state(encoder, nnx.Param)):
        if "adapter" in ".".join(map(str, path)):
            key, sub = jax.random.split(key)
            variable[...] = 0.1 * jax.random.normal(sub, variable.shape)
    for layer in encoder.layers:
        layer.output_adapter = AdapterStack(layer.output_adapter, None)
    adapterhub.export_adapterhub(encoder, directory, name=name, which="language")


@needs_minilm
def test_madx_run_swaps_language_adapters(tmp_path):
    from conftest import tiny_model_yaml

    for seed, lang in enumerate(("en", "de")):
        language_adapter(tmp_path / lang, lang, seed)
    (tmp_path / "madx.yaml").write_text("name: madx\n" + tiny_model_yaml() + f"""\
peft: {{kind: pfeiffer, reduction_factor: 4, allow_missing_language_adapters: true,
        language_adapters: {{en: {tmp_path / 'en'}, de: {tmp_path / 'de'}}}}}
data: {{max_train_examples: 64, max_eval_examples: 16, target_languages: [en, de, fr]}}
trainer: {{batch_size: 8, eval_batch_size: 16, steps: 4}}
schedule: {{name: standard}}
logging: {{tensorboard: false, progress: "off"}}
checkpoint: {{async_save: false}}
""")
    strict = load_config(tmp_path / "madx.yaml", ["peft.allow_missing_language_adapters=false"])
    with pytest.raises(UserError, match="no MAD-X language adapter for fr; list one per scored"):
        build_run(strict)
    config = load_config(tmp_path / "madx.yaml")
    parts = build_run(config).parts
    assert parts.groups == ["head", "adapter/task/layer_0", "adapter/task/layer_1"]
    frozen_paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(parts.frozen)}
    assert "encoder.embedding_adapter.F.up.kernel" in frozen_paths
    assert "encoder.layers.1.output_adapter.language.down.kernel" in frozen_paths
    # the source adapter is loaded; swapping in German gives German's tensors, French is dropped
    de = adapterhub.read_adapterhub(tmp_path / "de")
    swapped = dict(nnx.to_flat_state(with_language(parts.frozen, de)))
    kernel = swapped[("encoder", "layers", 1, "output_adapter", "language", "down", "kernel")]
    np.testing.assert_allclose(np.asarray(kernel[...]),
                               de.tensors["encoder.layer.1.output.adapters.de.adapter_down.0.weight"].T)
    dropped = dict(nnx.to_flat_state(with_language(parts.frozen, None)))
    assert not np.asarray(dropped[("encoder", "embedding_adapter", "G", "up", "bias")][...]).any()
    summary = train_run(config, check_writable(tmp_path / "run", overwrite=False, resume=False))
    assert summary["language_adapters"] == {"en": str(tmp_path / "en"), "de": str(tmp_path / "de"),
                                            "fr": None}
    assert set(summary["metrics"]) == {"en", "de", "fr"}


def test_madx_and_adapterhub_bad_inputs(tmp_path):
    language_adapter(tmp_path / "wide", "wide", 0, hidden=48)
    encoder = models.build(models.EncoderConfig(**TINY))
    with pytest.raises(UserError,
                       match="adapter built for hidden size 48, but the model's hidden size is 32"):
        adapterhub.install(encoder, adapterhub.read_adapterhub(tmp_path / "wide"), "language")
    with pytest.raises(UserError, match="no adapter_config.json"):
        adapterhub.read_adapterhub(tmp_path / "nowhere")
    language_adapter(tmp_path / "gated", "gated", 0)
    config = json.loads((tmp_path / "gated" / "adapter_config.json").read_text())
    config["config"]["use_gating"] = True
    (tmp_path / "gated" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="config.use_gating=True is not supported"):
        adapterhub.read_adapterhub(tmp_path / "gated")
    language_adapter(tmp_path / "en", "en", 0)
    hub = adapterhub.read_adapterhub(tmp_path / "en")
    hub.tensors.pop("encoder.layer.0.output.adapters.en.adapter_up.bias")
    with pytest.raises(UserError,
                       match="missing tensor 'encoder.layer.0.output.adapters.en.adapter_up.bias'"):
        adapterhub.install(models.build(models.EncoderConfig(**TINY)), hub, "language")
    with pytest.raises(UserError, match="no adapter for the source language 'en'"):
        from jaxcult.hub.madx import read_language_adapters

        read_language_adapters({"de": str(tmp_path / "en")}, "en")


def test_adapterhub_reads_the_older_bin_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    language_adapter(tmp_path / "en", "en", 0)
    tensors = load_file(str(tmp_path / "en" / "adapter.safetensors"))
    (tmp_path / "en" / "adapter.safetensors").unlink()
    torch.save({k: torch.tensor(v) for k, v in tensors.items()}, tmp_path / "en" / "pytorch_adapter.bin")
    hub = adapterhub.read_adapterhub(tmp_path / "en")
    assert hub.invertible_reduction_factor == 2 and len(hub.tensors) == len(tensors)
    for key, value in tensors.items():
        stripped = key.split(".", 1)[1]  # the model prefix (bert.) is removed on reading
        np.testing.assert_array_equal(hub.tensors[stripped], value)
