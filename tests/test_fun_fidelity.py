"""Switches that reproduce the official FUN code (issue: FUN reproduction fidelity)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.config_loading import load_config
from jaxcult.data import copa
from jaxcult.data.batching import BatchIterator, Split
from jaxcult.data.splits import subsample
from jaxcult.errors import UserError
from jaxcult.eval import squad_scores

REPO = Path(__file__).resolve().parent.parent
RECORD = {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
          "choice2": "He got a hole in his sock.", "question": "cause", "label": 0}


def test_copa_official_input_puts_the_question_in_the_first_segment():
    official = copa.as_choices(RECORD, "official")
    assert official == {"context": "The man broke his toe. What was the cause?", "label": 0,
                        "choices": ["He dropped a hammer on his foot.", "He got a hole in his sock."]}
    ours = copa.as_choices(RECORD)
    assert ours["context"] == "The man broke his toe."
    assert ours["choices"][0] == "What was the cause? He dropped a hammer on his foot."
    with pytest.raises(UserError, match="copa_format: expected 'jaxcult' or 'official'"):
        copa.XCOPA().info(load_config(None, ["data.name=xcopa", "data.copa_format=x"]).data)


def test_partial_batches_and_one_pass_fisher_match_hf_epochs():
    """COPA: 400 examples, batch 64: HF's Trainer runs 7 steps per epoch (the last of 16), the
    official Fisher pass reads min(41, 7) batches."""
    split = Split({"labels": np.arange(400)}, "copa")
    dropping = BatchIterator(split, 64, 0)
    keeping = BatchIterator(split, 64, 0, keep_remainder=True)
    assert dropping.batches_per_epoch == 6 and keeping.batches_per_epoch == 7
    sizes = [len(next(keeping)["labels"]) for _ in range(7)]
    assert sizes == [64] * 6 + [16]
    epoch = np.concatenate([next(keeping)["labels"] for _ in range(7)])
    assert sorted(epoch.tolist()) == list(range(400))  # every example once per epoch


def test_max_train_examples_subsample_is_seeded():
    config = load_config(None, ["data.max_train_examples=5", "data.subsample=random"]).data
    records = [{"i": i} for i in range(50)]
    first = subsample(records, config, seed=1)
    assert first == subsample(records, config, seed=1) != subsample(records, config, seed=2)
    assert len(first) == 5 and first != records[:5]
    assert [r["i"] for r in first] == sorted(r["i"] for r in first)  # file order kept
    assert subsample(records, load_config(None, ["data.max_train_examples=5"]).data, 1) == records[:5]


def test_fun_official_scoring_segments_chinese_by_character():
    prediction, gold = {"q": "中国首都北京"}, {"q": ["北京"]}
    assert squad_scores(prediction, gold, lang="zh", rules="squad")["f1"] == 0.0
    assert squad_scores(prediction, gold, lang="zh", rules="fun_official")["f1"] == pytest.approx(50.0)
    # other languages: SQuAD v1.1 (articles removed, ASCII punctuation only)
    assert squad_scores({"q": "the Rhine."}, {"q": ["Rhine"]}, lang="de",
                        rules="fun_official")["exact_match"] == 100.0
    # the official zh rule keeps full-width punctuation as tokens and removes no articles
    assert squad_scores({"q": "北京，"}, {"q": ["北京"]}, lang="zh",
                        rules="fun_official")["exact_match"] == 0.0


@needs_minilm
def test_hf_head_matches_transformers_bert_for_sequence_classification(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxcult.run.build import build_model, tokenizer_of
    from jaxcult.tasks import resolve_task

    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "bert")
    config = load_config(None, [f"model.name={tmp_path / 'bert'}", "model.tokenizer=minilm-l6",
                                "task.head=hf", "peft.kind=none", "task.num_labels=3"])
    task = resolve_task(config.task, ())
    parts = build_model(config, task, tokenizer_of(config))
    assert parts.groups == ["head"] and parts.counts["head"] == 32 * 3 + 3  # the pooler stays frozen
    head = parts.params["head"]["head"]
    head["classifier"]["kernel"].set_value(jnp.asarray(hf.classifier.weight.detach().numpy().T))
    head["classifier"]["bias"].set_value(jnp.asarray(hf.classifier.bias.detach().numpy()))
    ids = np.random.default_rng(0).integers(1000, 2000, size=(2, 7))
    from jaxcult.trainers.program import ModelProgram

    ours = ModelProgram(task, None, parts.graphdef, parts.groups).outputs(
        parts.params, parts.frozen, {"input_ids": jnp.asarray(ids),
                                     "attention_mask": jnp.ones((2, 7), jnp.int32),
                                     "token_type_ids": jnp.zeros((2, 7), jnp.int32)})
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)


def test_span_qa_argmax_batch_is_the_official_scale():
    """Start and end rows averaged over 2B (the official `cat`) give a quarter of the squared
    gradient of the per-example sum averaged over B."""
    from jaxcult import fisher

    rng = np.random.default_rng(0)
    params = {"g": {"w": jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)}}
    x = jnp.asarray(rng.normal(size=(4, 2, 5)), jnp.float32)

    def log_probs(p, batch):
        return jax.nn.log_softmax(batch["x"] @ p["g"]["w"], -1), None

    value = fisher.batch_trace("argmax_batch", log_probs, params, {"x": x}, jax.random.key(0), ["g"])
    labels = jax.lax.stop_gradient((x @ params["g"]["w"]).argmax(-1))

    def summed(p):  # the previous definition: per-example sum of start and end, mean over B
        lp = jax.nn.log_softmax(x @ p["g"]["w"], -1)
        return -jnp.take_along_axis(lp, labels[..., None], -1)[..., 0].sum(-1).mean()

    old = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(jax.grad(summed)(params))) / 4
    np.testing.assert_allclose(float(value[0]), old / 4, rtol=1e-5)


def test_both_config_families_validate_and_differ_in_the_switches():
    fun = sorted((REPO / "experiments" / "fun").glob("*-*-*.yaml"))
    official = [p for p in fun if p.stem.endswith("-official")]
    plain = [p for p in fun if not p.stem.endswith("-official") and p.stem.count("-") == 2]
    assert len(plain) == 40 and len(official) == 40
    for path in official:
        config = load_config(path)
        assert config.optimizer.name == "adamw_hf" and config.optimizer.decay_params == "matrices"
        if config.schedule.name != "standard":
            assert config.schedule.official_offset
        if config.schedule.name == "fun":
            assert config.fisher.estimator == "argmax_batch" and config.fisher.one_pass
        if config.task.name in ("pair_classification", "multiple_choice"):
            assert config.task.head == "hf"
        if config.data.name == "xcopa":
            assert config.data.copa_format == "official"
            assert not config.data.drop_remainder
        if config.data.name in ("xquad", "mlqa"):
            assert config.task.evaluators[0].scoring == "fun_official"
    for path in plain + official:
        config = load_config(path)
        targets = {"xnli": ["ar", "de", "el", "es", "hi", "ru", "sw", "th", "tr", "vi", "zh"],
                   "xquad": ["ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh"]}
        if config.data.name in targets:
            assert config.data.target_languages == targets[config.data.name]
        adapters = config.peft.language_adapters
        assert set(adapters) >= {"en", *config.data.target_languages}


def test_one_pass_fisher_reads_one_epoch_of_at_most_41_batches_scaled_as_the_official_code():
    from jaxcult.trainers.fisher_tracker import FisherTracker

    sizes = []

    class Program:
        def make_fisher(self, estimator):
            def fn(params, frozen, batch, key):
                sizes.append(len(batch["labels"]))
                return jnp.ones(1)
            return fn

    config = load_config(None, ["schedule.name=fun", "trainer.batch_size=64",
                                "fisher.estimator=argmax_batch", "fisher.one_pass=true"])
    tracker = FisherTracker(config, Program(), ["g"], None,
                            Split({"labels": np.arange(400)}, "copa"))
    traces = tracker(None, step=50)
    assert sizes == [64] * 6 + [16]               # min(41, 7) batches, the partial one included
    assert traces["g"] == pytest.approx(6 + 16 / 64)  # summed, the partial batch divided by 64
    sizes.clear()
    tracker(None, step=100)
    assert sizes == [64] * 6 + [16]               # a fresh pass at every estimate
