"""Masked-LM: the loss of a loaded BERT MLM head equals transformers' BertForMaskedLM on the
same masked batch; masking follows 15% / 80-10-10 and whole words; a run trains on text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.config_loading import load_config
from jaxcult.data.mlm import mask_tokens

TEXTS = ["The quick brown fox jumps over the lazy dog near the riverbank.",
         "Unbelievably, tokenisation splits uncommon words into several pieces.",
         "Language adapters are trained on monolingual text with masked language modelling."]


def test_masking_rates_and_whole_words():
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(400, 100))
    maskable = np.ones_like(ids, bool)
    maskable[:, :2] = False                                     # e.g. [CLS] and padding
    masked, selected = mask_tokens(ids, maskable, rng, mask_id=7, vocab_size=3000)
    assert not selected[:, :2].any()
    assert selected.mean() / maskable.mean() == pytest.approx(0.15, abs=0.005)
    outcome = masked[selected]
    assert (outcome == 7).mean() == pytest.approx(0.8, abs=0.01)
    assert (outcome == ids[selected]).mean() == pytest.approx(0.1, abs=0.01)   # kept as they were
    assert ((outcome != 7) & (outcome != ids[selected])).mean() == pytest.approx(0.1, abs=0.01)
    words = np.repeat(np.arange(50), 2)[None].repeat(400, 0)    # two tokens per word
    _, selected = mask_tokens(ids, maskable, rng, mask_id=7, vocab_size=3000, word_ids=words)
    pairs = selected[:, 2:].reshape(400, 49, 2)
    assert (pairs[..., 0] == pairs[..., 1]).all() and pairs.any()


@needs_minilm
def test_mlm_loss_equals_transformers_bert_for_masked_lm(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import jax
    from flax import nnx

    from jaxcult.hub.pretrained import load_tokenizer
    from jaxcult.run.build import build_model
    from jaxcult.tasks import resolve_task

    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64)).eval()
    with torch.no_grad():   # a trained-looking head: not the zeros / ones of initialisation
        for p in hf.cls.predictions.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "bert-mlm")
    config = load_config(None, [f"model.name={tmp_path / 'bert-mlm'}", "model.tokenizer=minilm-l6",
                                "model.max_length=32", "task.name=masked_lm", "peft.kind=full",
                                "task.options={whole_word: true, mask_probability: 0.3}"])
    task = resolve_task(config.task)
    tokenizer = load_tokenizer("minilm-l6")
    split = task.tokenize([{"text": t} for t in TEXTS], tokenizer, 32, "train")
    batch = {k: jax.numpy.asarray(v) for k, v in split.arrays.items()}
    parts = build_model(config, task, tokenizer)
    model = nnx.merge(parts.graphdef, *parts.params.values(), parts.frozen)
    loss, _ = task.loss(task.forward(model, batch, None), batch)
    labels = np.full(split.arrays["input_ids"].shape, -100)   # gathered positions, scattered back
    rows, slots = np.nonzero(split.arrays["loss_mask"])
    labels[rows, split.arrays["masked_positions"][rows, slots]] = split.arrays["labels"][rows, slots]
    assert (labels != -100).sum() == split.arrays["loss_mask"].sum() > 0
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(split.arrays["input_ids"], dtype=torch.long),
                      attention_mask=torch.tensor(split.arrays["attention_mask"]),
                      labels=torch.tensor(labels, dtype=torch.long)).loss
    assert float(loss) == pytest.approx(float(expected), abs=1e-4)


@needs_minilm
@pytest.mark.slow   # ~15 s; MAD-X stacking and swapping stay in tests/test_madx.py
def test_language_adapter_trains_on_text_records_and_exports_for_madx(tmp_path, monkeypatch):
    """A MAD-X language adapter (Pfeiffer rf 2 + NICE, frozen backbone) trains on text records;
    its invertible adapter is the bottom group of gradual unfreezing; `jaxcult export` writes
    an AdapterHub language adapter that MAD-X runs install with the trained outputs."""
    import jax.numpy as jnp

    from jaxcult.cli import main
    from jaxcult.hub import adapterhub
    from jaxcult.run.restore import load_run_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "text").mkdir()
    lines = "".join(json.dumps({"text": f"{t} Sentence number {i}."}) + "\n"
                    for i in range(8) for t in TEXTS)
    for split in ("train", "validation"):
        (tmp_path / "text" / f"{split}.jsonl").write_text(lines)
    assert main(["train", "--run-dir", "run", "model.name=random", "model.tokenizer=minilm-l6",
                 "model.max_length=32", "model.overrides={model_type: bert, vocab_size: 30522, "
                 "hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
                 "intermediate_size: 37}", "task.name=masked_lm", "data.name=text_jsonl",
                 "data.manual_dir=text", "data.eval_split=validation", "peft.kind=pfeiffer",
                 "peft.reduction_factor=2", "peft.invertible=true", "schedule.name=gu",
                 "schedule.k=1", "optimizer.lr=0.01", "trainer.steps=3", "trainer.batch_size=8",
                 "logging.tensorboard=false", "logging.progress=off",
                 "checkpoint.async_save=false"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert np.isfinite(summary["metrics"]["en"]["perplexity"])
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    unfrozen = [e["groups"] for e in events if e.get("event") == "unfreeze"]
    assert unfrozen[-1] == ["adapter/invertible"]           # below layer 0: unfrozen last
    assert main(["export", "run", "--format", "adapterhub", "--name", "en", "--out", "en"]) == 0
    hub = adapterhub.read_adapterhub(tmp_path / "en")
    assert hub.invertible_reduction_factor == 2 and hub.config.reduction_factor == 2
    _, trained = load_run_model(tmp_path / "run")
    _, fresh = load_run_model(tmp_path / "run")
    for layer in fresh.encoder.layers:       # the backbone alone, then the exported adapter
        layer.output_adapter = None
    fresh.encoder.embedding_adapter = None
    adapterhub.install(fresh.encoder, hub, "language")
    ids = jnp.asarray([[101, 2023, 2003, 1037, 3231, 102]])
    expected = trained.encoder(ids).last_hidden_state
    assert float(jnp.abs(trained.encoder.embedding_adapter.F.up.kernel[...]).max()) > 0
    np.testing.assert_allclose(fresh.encoder(ids).last_hidden_state, expected, atol=1e-5)


def test_invertible_adapter_config_errors(tmp_path):
    from jaxcult.cli import main

    assert main(["train", "--dry-run", "peft.kind=lora", "peft.invertible=true"]) == 2
    assert main(["train", "--dry-run", "peft.invertible_reduction_factor=4"]) == 2
    assert main(["train", "--dry-run", "peft.invertible=true",
                 f"peft.language_adapters={{en: {tmp_path}}}"]) == 2
