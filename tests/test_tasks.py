"""Task families on tiny random encoders: pair classification (PAWS-X, XNLI), extractive QA
(doc-stride windows, n-best decoding, SQuAD scores), and every task's Fisher outputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.config_loading import load_config
from jaxcult.data import pairs, squad
from jaxcult.data.registry import DatasetInfo
from jaxcult.errors import UserError
from jaxcult.eval import squad_scores
from jaxcult.eval.span_qa import SpanQAScores
from jaxcult.run.train import train as train_run
from jaxcult.rundir import check_writable
from jaxcult.tasks import resolve_task
from jaxcult.trainers.program import ModelProgram

TINY = [
    "model.name=random", "model.tokenizer=minilm-l6", "model.max_length=64",
    "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,"
    " num_attention_heads: 2, intermediate_size: 37}",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.log_every=2",
    "logging.tensorboard=false", "logging.progress=off", "fisher.num_batches=1",
    "checkpoint.async_save=false", "schedule.name=fun", "schedule.k=2",
]


def squad_file(path, articles):
    """A SQuAD v1.1 file from [(context, [(question, answer)])] (answers found in the context)."""
    data = [{"title": f"t{a}", "paragraphs": [{"context": context, "qas": [
        {"id": f"{a}-{q}", "question": question,
         "answers": [{"text": answer, "answer_start": context.index(answer)}]}
        for q, (question, answer) in enumerate(qas)]}]} for a, (context, qas) in enumerate(articles)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": data}))


FILLER = " ".join(f"word{i}" for i in range(60))
ARTICLES = [(f"{FILLER} The tower was built in 1889 by Eiffel. {FILLER} Paris is the capital.",
             [("When was the tower built?", "1889"), ("What is the capital?", "Paris")]),
            ("Water boils at one hundred degrees. Ice melts at zero.",
             [("When does water boil?", "one hundred degrees")])]


@pytest.fixture
def tokenizer():
    from jaxcult.hub.pretrained import load_pretrained

    pytest.importorskip("transformers")
    if not __import__("conftest")._minilm_missing():
        return load_pretrained("minilm-l6")[1]
    pytest.skip("asset minilm-l6 not installed")


def test_windows_cover_long_contexts_and_labels_point_at_answers(tmp_path, tokenizer):
    squad_file(tmp_path / "s.json", ARTICLES)
    records = squad.read_squad(tmp_path / "s.json")
    split = squad.tokenize_windows(records, tokenizer, 48, 16, "s")
    example, offsets = split.meta["example"], split.meta["offsets"]
    assert len(example) > len(records) and sorted(set(example)) == [0, 1, 2]
    found = set()
    for w, (start, end) in enumerate(split.arrays["labels"]):
        if start == 0:
            continue
        record = records[example[w]]
        assert record["context"][offsets[w, start, 0]:offsets[w, end, 1]] == record["answers"][0]
        found.add(int(example[w]))
    assert found == {0, 1, 2}  # every answer lies inside at least one window


def test_decoding_gold_logits_gives_perfect_scores(tmp_path, tokenizer):
    squad_file(tmp_path / "s.json", ARTICLES)
    records = squad.read_squad(tmp_path / "s.json")
    split = squad.tokenize_windows(records, tokenizer, 48, 16, "s")
    logits = np.full((len(split), 2, 48), -5.0, np.float32)
    for w, (start, end) in enumerate(split.arrays["labels"]):
        if start:
            logits[w, 0, start], logits[w, 1, end] = 5.0, 5.0
    info = DatasetInfo("squad", ("en",))
    task = SpanQAScores(load_config(None, ["task.name=extractive_qa"]).task.evaluators[0], info)
    assert task.predictions(logits, split.meta) == {"0-0": "1889", "0-1": "Paris",
                                                    "1-0": "one hundred degrees"}
    assert task.metrics({"logits": logits}, split) == {"f1": 1.0, "exact_match": 1.0}
    short = SpanQAScores(load_config(None, ["task.name=extractive_qa",
                                            "task.evaluators.0.max_answer_length=2"]
                                     ).task.evaluators[0], info)
    assert short.predictions(logits, split.meta)["1-0"] != "one hundred degrees"


def test_squad_reader_errors_name_file_and_record(tmp_path):
    squad_file(tmp_path / "s.json", ARTICLES)
    data = json.loads((tmp_path / "s.json").read_text())
    data["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"bad.json: data\[1\].paragraphs\[0\].qas\[0\]: answer "
                                        r"'one hundred degrees' is not at character 3"):
        squad.read_squad(tmp_path / "bad.json")
    del data["data"][0]["paragraphs"][0]["qas"][1]["question"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"qas\[1\]: missing field 'question'"):
        squad.read_squad(tmp_path / "bad.json")
    with pytest.raises(UserError, match="nowhere.json: file not found"):
        squad.read_squad(tmp_path / "nowhere.json")


@needs_minilm
def test_extractive_qa_run_scores_every_language(tmp_path):
    root = tmp_path / "data"
    squad_file(root / "squad" / "train-v1.1.json", ARTICLES * 6)
    squad_file(root / "squad" / "dev-v1.1.json", ARTICLES)
    for lang in ("en", "de"):
        squad_file(squad.xquad_path(root, lang), ARTICLES)
    config = load_config(None, [*TINY, "task.name=extractive_qa", "task.doc_stride=16",
                                "model.max_length=48", "data.name=xquad", f"data.manual_dir={root}",
                                "data.target_languages=[en, de]", "trainer.steps=4"])
    summary = train_run(config, check_writable(tmp_path / "run", overwrite=False, resume=False))
    assert summary["primary_metric"] == "f1"
    for lang in ("en", "de"):
        assert set(summary["metrics"][lang]) == {"f1", "exact_match"}
        assert 0.0 <= summary["metrics"][lang]["exact_match"] <= summary["metrics"][lang]["f1"] <= 1.0
    # SQuAD's prediction-file format, one answer text per question id
    predictions = json.loads((tmp_path / "run" / "predictions" / "de.json").read_text())
    assert isinstance(predictions, dict) and predictions and all(
        isinstance(text, str) for text in predictions.values())


def test_pawsx_reader_matches_the_shared_files(shared_data):
    for lang, placeholders in (("en", 0), ("de", 68), ("zh", 16)):
        examples = pairs.read_pawsx(shared_data, lang, "validation")
        assert len(examples) == 2000 - placeholders
        assert {e["label"] for e in examples} == {0, 1}


def test_pair_readers_on_written_fixtures(tmp_path):
    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tgold_label\n0\tA man sleeps.\tA person rests.\tentailment\n"
        "1\tA dog runs.\tA cat sleeps.\tcontradiction\n2\tIt rains.\tIt is cold.\tneutral\n")
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli" / "dev-de.tsv").write_text("Ein Mann.\tEine Person.\tentailment\n"
                                                  "Ein Hund.\tEine Katze.\tcontradictory\n")
    assert [e["label"] for e in pairs.read_xnli(tmp_path, "en", "train")] == [0, 2, 1]
    assert [e["label"] for e in pairs.read_xnli(tmp_path, "de", "validation")] == [0, 2]
    (tmp_path / "xnli" / "dev-fr.tsv").write_text("Un.\tDeux.\tmaybe\n")
    with pytest.raises(UserError, match=r"dev-fr.tsv:1: label 'maybe' is not one of"):
        pairs.read_xnli(tmp_path, "fr", "validation")
    with pytest.raises(UserError, match="unknown language code 'xx'"):
        pairs.read_xnli(tmp_path, "xx", "validation")
    with pytest.raises(UserError, match="file not found"):
        pairs.read_pawsx(tmp_path, "en", "validation")


@needs_minilm
def test_pawsx_run_from_the_shared_files(shared_data, tmp_path):
    train = shared_data / "pawsx" / "data" / "pawsx" / "dev-en.tsv"
    config = load_config(None, [*TINY, "task.name=pair_classification", "data.name=pawsx",
                                f"data.manual_dir={shared_data}", f"data.train_file={train}",
                                "data.max_train_examples=64", "data.max_eval_examples=16",
                                "data.eval_split=validation", "data.target_languages=[en, fr, ja]",
                                "trainer.steps=4"])
    summary = train_run(config, check_writable(tmp_path / "run", overwrite=False, resume=False))
    assert set(summary["metrics"]) == {"en", "fr", "ja"}


@needs_minilm
@pytest.mark.parametrize("task, estimator", [   # two argmax_batch cases in the slow suite (~12 s each)
    pytest.param(t, e, marks=pytest.mark.slow) if e == "argmax_batch" and t != "extractive_qa"
    else (t, e) for e in ("sampled", "argmax_batch")
    for t in ("pair_classification", "multiple_choice", "extractive_qa")])
def test_each_task_fisher_outputs(tmp_path, task, estimator):
    """tr(F) per group is finite and positive; argmax_batch equals the official code's squared
    gradient of the mean NLL over all output rows at the argmax labels / B, written here from
    the model's raw logits (QA: start and end rows concatenated, 2B rows)."""
    from jaxcult.run.build import build_model, tokenizer_of

    config = load_config(None, [*TINY, f"task.name={task}"])
    family = resolve_task(config.task, ("no", "yes"))
    parts = build_model(config, family, tokenizer_of(config))
    program = ModelProgram(family, None, parts.graphdef, parts.groups)  # Fisher needs no evaluator
    rng = np.random.default_rng(0)
    shape = {"multiple_choice": (4, 2, 12)}.get(task, (4, 12))
    batch = {"input_ids": jnp.asarray(rng.integers(1000, 2000, size=shape), jnp.int32),
             "attention_mask": jnp.ones(shape, jnp.int32),
             "token_type_ids": jnp.zeros(shape, jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 2, size=(4, 2) if task == "extractive_qa" else 4))}
    value = np.asarray(program.make_fisher(estimator)(parts.params, parts.frozen, batch,
                                                      jax.random.key(0)))
    assert value.shape == (len(parts.groups),) and np.all(np.isfinite(value)) and np.all(value > 0)
    if estimator == "argmax_batch":
        inputs = {k: v for k, v in batch.items() if k != "labels"}

        def official_loss(params):
            """The official code: raw logits (QA: start and end rows concatenated along the
            batch), argmax labels, F.nll_loss(log_softmax) averaged over every row."""
            out = program.outputs(params, parts.frozen, inputs)
            logits = jnp.concatenate([out[:, 0], out[:, 1]]) if task == "extractive_qa" else out
            labels = jax.lax.stop_gradient(logits.argmax(-1))
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

        grads = jax.grad(official_loss)(parts.params)
        direct = [sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads[name])) / 4
                  for name in parts.groups]
        np.testing.assert_allclose(value, direct, rtol=1e-4)


def test_squad_scores_is_exported():
    assert squad_scores({"q": "Paris"}, {"q": ["paris"]}) == {"f1": 100.0, "exact_match": 100.0}


def test_pair_reader_bad_files(tmp_path):
    (tmp_path / "pawsx").mkdir()
    (tmp_path / "pawsx" / "dev-de.tsv").write_bytes(b"Ein Satz\t\xff\xfe kaputt\t1\n")
    with pytest.raises(UserError, match=r"dev-de.tsv: not UTF-8 text"):
        pairs.read_pawsx(tmp_path, "de", "validation")
    (tmp_path / "pawsx" / "dev-fr.tsv").write_text("")
    with pytest.raises(UserError, match=r"dev-fr.tsv: no examples"):
        pairs.read_pawsx(tmp_path, "fr", "validation")
    (tmp_path / "pawsx" / "dev-es.tsv").write_text("una frase\t2\n")
    with pytest.raises(UserError, match=r"dev-es.tsv:1: expected 3 tab-separated fields, found 2"):
        pairs.read_pawsx(tmp_path, "es", "validation")
    (tmp_path / "pawsx" / "dev-ja.tsv").write_text("a\tb\t7\n")
    with pytest.raises(UserError, match=r"dev-ja.tsv:1: label '7' is not one of"):
        pairs.read_pawsx(tmp_path, "ja", "validation")
