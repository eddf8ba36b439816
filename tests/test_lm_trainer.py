"""The causal-LM trainer on a tiny random Llama: LoRA (with dropout and modules_to_save),
per-language perplexity, chat data trained on assistant tokens only, Fisher on token outputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.config_loading import load_config
from jaxcult.data import lm
from jaxcult.errors import UserError
from jaxcult.run.build import build_run
from jaxcult.run.train import train as train_run
from jaxcult.rundir import check_writable

pytestmark = needs_minilm

TINY_LM = [
    "task.name=causal_lm", "model.name=random", "model.tokenizer=minilm-l6", "model.max_length=24",
    "model.overrides={model_type: llama, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,"
    " num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64}",
    "data.max_train_examples=128", "data.max_eval_examples=16", "data.target_languages=[en, de]",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.log_every=5",
    "logging.tensorboard=false", "logging.progress=off",
    "checkpoint.async_save=false", "optimizer.lr=1e-2",
]


def test_lora_lm_run_reports_perplexity_and_trains_saved_modules(tmp_path):
    config = load_config(None, [*TINY_LM, "peft.kind=lora", "peft.lora_dropout=0.1",
                                "peft.modules_to_save=[lm_head]", "schedule.name=gu",
                                "schedule.k=5", "trainer.steps=20", "fisher.track_every=5",
                                "fisher.num_batches=1"])
    run = check_writable(tmp_path / "run", overwrite=False, resume=False)
    summary = train_run(config, run)
    assert summary["primary_metric"] == "loss"
    for lang in ("en", "de"):
        values = summary["metrics"][lang]
        assert np.isclose(values["perplexity"], np.exp(values["loss"]))
        assert 0.0 <= values["token_accuracy"] <= 1.0
    # lm_head (saved in full) trains from step 0, so English loss drops well below ln(vocab)
    assert summary["metrics"]["en"]["loss"] < np.log(30522) - 2
    rows = [json.loads(x) for x in (run.root / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["split"] == "train")
    assert "saved/lm_head" in first["trainable_groups"]
    fisher = [json.loads(x) for x in (run.root / "fisher.jsonl").read_text().splitlines()]
    assert {"lora/layer_0", "saved/lm_head"} <= set(fisher[0]["trace"])
    assert (run.root / "report.md").read_text().count("perplexity") == 1


def test_saved_modules_train_in_float32_on_a_half_precision_model():
    """As PEFT's modules_to_save copies after `prepare_model_for_kbit_training` (the official
    CLCA training): the modules trained in full hold float32 parameters, the frozen backbone
    keeps the model's dtype, and the forward runs in the compute dtype."""
    config = load_config(None, [*TINY_LM, "peft.kind=lora", "model.dtype=bfloat16",
                                "peft.modules_to_save=[embed_tokens]"])
    built = build_run(config)
    parts = built.parts
    assert {x.dtype for x in jax.tree.leaves(parts.params["saved/embed_tokens"])} == {jnp.dtype("float32")}
    assert jnp.dtype("bfloat16") in {x.dtype for x in jax.tree.leaves(parts.frozen)}
    program = built.model_program()
    batch = {k: jnp.asarray(v[:2]) for k, v in built.data.train.arrays.items()}
    loss, grads = jax.value_and_grad(lambda p: program.task.loss(
        program.outputs(p, parts.frozen, batch), batch)[0])(parts.params)
    assert np.isfinite(float(loss))
    assert {x.dtype for x in jax.tree.leaves(grads["saved/embed_tokens"])} == {jnp.dtype("float32")}


@pytest.mark.parametrize("estimator", ["sampled", "argmax_batch", "empirical"])
def test_token_fisher_matches_per_token_brute_force(estimator):
    """Per-group tr(F) of the LM task equals the loop over examples (sampled: over its labels)."""
    config = load_config(None, [*TINY_LM, "peft.kind=lora", "data.max_train_examples=8"])
    built = build_run(config)
    parts, data, program = built.parts, built.data, built.model_program()
    batch = {k: jnp.asarray(v[:3]) for k, v in data.train.arrays.items()}
    value = np.asarray(program.make_fisher(estimator)(parts.params, parts.frozen, batch,
                                                      jax.random.key(0)))
    assert value.shape == (len(parts.groups),) and np.all(value > 0)
    log_probs = program.log_probs(parts.frozen)
    lp, weights = log_probs(parts.params, {k: v for k, v in batch.items() if k != "labels"})
    if estimator == "empirical":
        labels = batch["labels"]
    elif estimator == "argmax_batch":
        labels = lp.argmax(-1)
    else:  # each example's own draw: key folded with its row index
        labels = jnp.stack([jax.random.categorical(jax.random.fold_in(jax.random.key(0), i),
                                                   lp[i:i + 1], axis=-1)[0] for i in range(3)])

    def ll(params, index):
        one = {k: v[index:index + 1] for k, v in batch.items() if k != "labels"}
        lp, w = log_probs(params, one)
        picked = jnp.take_along_axis(lp, labels[index:index + 1, :, None], -1)[..., 0]
        return (picked * w).sum()

    def sq(grads):
        return np.array([sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads[name]))
                         for name in parts.groups])

    if estimator == "argmax_batch":
        expected = sq(jax.grad(lambda p: -sum(ll(p, i) for i in range(3)) / 3)(parts.params)) / 3
    else:
        expected = np.mean([sq(jax.grad(ll)(parts.params, i)) for i in range(3)], axis=0)
    np.testing.assert_allclose(value, expected, rtol=2e-4)


def test_chat_masks_everything_but_assistant_turns():
    from jaxcult.hub.pretrained import load_pretrained

    _, tokenizer = load_pretrained("minilm-l6")
    records = [{"messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": "capital of france"},
                             {"role": "assistant", "content": "paris"},
                             {"role": "user", "content": "and spain"},
                             {"role": "assistant", "content": "madrid"}]}]
    split = lm.tokenize_chats(records, tokenizer, 64, "chat")
    ids, mask = split.arrays["input_ids"][0], split.arrays["loss_mask"][0]
    targets = tokenizer.convert_ids_to_tokens(split.arrays["labels"][0][mask == 1])
    assert targets == ["paris", "madrid"]
    assert tokenizer.decode(ids[ids != 0]).count("<") > 0  # the fallback template's role tags


@pytest.mark.parametrize(("line", "message"), [
    ('{"messages": []}', "non-empty list field 'messages'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "'role' must be one of"),
    ('{"messages": [{"role": "user", "content": 3}]}', "non-text field 'content'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"messages": ', "invalid JSON"),
])
def test_bad_chat_records_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}, '
                    '{"role": "assistant", "content": "b"}]}\n' + line + "\n")
    with pytest.raises(UserError, match=f"{path}:2: .*{message}"):
        lm.read_chat_jsonl(path)


def test_text_records_train_every_token_and_bad_ones_name_file_and_line(tmp_path):
    from jaxcult.data.registry import DATASETS

    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a b"}\n{"text": "  "}\n')
    with pytest.raises(UserError, match=f"{path}:2: field 'text' is empty"):
        DATASETS.get("text_jsonl", "data.name")().read_records(path)
    path.write_text('{"text": "a b"}\n{"txt": "c"}\n')
    with pytest.raises(UserError, match=f"{path}:2: expected an object with a text field 'text'"):
        DATASETS.get("text_jsonl", "data.name")().read_records(path)


def test_chat_run_from_local_files_and_missing_folder(tmp_path):
    folder = tmp_path / "chats"
    folder.mkdir()
    turn = lambda q, a: json.dumps({"messages": [{"role": "user", "content": q},  # noqa: E731
                                                 {"role": "assistant", "content": a}]})
    (folder / "train.jsonl").write_text("\n".join(turn(f"question {i}", f"answer {i}")
                                                  for i in range(16)) + "\n")
    (folder / "validation.jsonl").write_text(turn("question", "answer") + "\n")
    de = json.dumps({"language": "de", "messages": [{"role": "user", "content": "frage"},
                                                    {"role": "assistant", "content": "antwort"}]})
    (folder / "test.jsonl").write_text(turn("question", "answer") + "\n" + de + "\n")
    config = load_config(None, [*TINY_LM, "data.name=chat_jsonl", f"data.manual_dir={folder}",
                                "peft.kind=lora", "schedule.name=standard", "trainer.steps=4"])
    summary = train_run(config, check_writable(tmp_path / "run", overwrite=False, resume=False))
    assert set(summary["metrics"]) == {"en", "de"}
    config = load_config(None, [*TINY_LM, "data.name=chat_jsonl",
                                f"data.manual_dir={tmp_path / 'nowhere'}", "peft.kind=lora"])
    with pytest.raises(UserError, match="nowhere/test.jsonl: file not found"):
        train_run(config, check_writable(tmp_path / "run2", overwrite=False, resume=False))
    assert not (tmp_path / "run2").exists()


def test_length_buckets_pad_every_split_up_to_a_bucket():
    """Data whose longest examples differ gets the same bucket lengths, so runs on different
    data (one adapter per culture) train and evaluate with the same compiled programs."""
    def lengths(examples: int, buckets: str) -> tuple[int, ...]:
        data = build_run(load_config(None, [
            *TINY_LM, "model.max_length=64", f"data.max_train_examples={examples}",
            "data.max_eval_examples=2", f"data.length_buckets={buckets}"])).data
        return (data.train.padded_length, data.validation.padded_length,
                *(split.padded_length for split in data.tests.values()))

    assert lengths(2, "none")[0] != lengths(128, "none")[0]   # the data differs in length
    assert lengths(2, "[24,40]") == lengths(128, "[24,40]") == (24, 40, 40, 40)


def test_fitted_length_buckets_follow_the_training_and_evaluation_lengths():
    """`length_buckets: fit` picks data.bucket_count sizes from the training rows' lengths:
    batches are cut to them (fewer padded tokens than one padded length), nothing else moves.
    The evaluated splits get their own sizes, fitted to the batches evaluation scores."""
    from jaxcult.data.batching import BatchIterator, eval_batch_lengths, fitted_bucket_sizes

    def run_data(*settings):
        return build_run(load_config(None, [*TINY_LM, "model.max_length=64", *settings])).data

    fitted = run_data("data.length_buckets=fit", "data.bucket_count=3", "data.length_grouping=4")
    plain = run_data()
    sizes = fitted_bucket_sizes(fitted.train.lengths, 3)
    assert fitted.train.buckets.sizes == sizes and len(sizes) == 3
    assert sizes[-1] == fitted.train.padded_length == plain.train.padded_length
    np.testing.assert_array_equal(fitted.train.arrays["input_ids"], plain.train.arrays["input_ids"])
    batches = BatchIterator(fitted.train, 8, seed=0, length_grouping=4)
    shapes = {next(batches)["input_ids"].shape[-1] for _ in range(16)}
    assert shapes <= set(sizes) and len(shapes) > 1
    evaluated = [fitted.validation, *fitted.tests.values()]
    scored = np.concatenate([eval_batch_lengths(split, 16) for split in evaluated])  # eval batch
    assert {split.buckets.sizes for split in evaluated} == {fitted_bucket_sizes(scored, 3)}
    assert evaluated[0].buckets.sizes != sizes
