"""Training from prepared TFDS datasets (`data.source: tfds`): batches read and tokenised batch
by batch equal the in-memory path's (same seed, same order, same padding) for XCOPA, PAWS-X
and XQuAD (doc-stride windows), through grain worker processes too, and resuming mid-epoch
continues exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA

from jaxcult.config_loading import load_config
from jaxcult.data.pipeline import GrainBatches
from jaxcult.errors import UserError

pytest.importorskip("tensorflow_datasets")


def task_data(overrides: list[str]):
    from jaxcult.run.build import load_task_data, resolve_plugins, tokenizer_of

    config = load_config(None, ["model.name=minilm-l6", "model.max_length=48",
                                "trainer.batch_size=8", "data.max_eval_examples=16", *overrides])
    plugins, dataset = resolve_plugins(config)
    return config, load_task_data(config, plugins.task, dataset, tokenizer_of(config))


def batches(split, count: int, workers: int = 0, state=None) -> tuple[list[dict], dict]:
    iterator = GrainBatches(split, 8, seed=3, worker_count=workers)
    if state is not None:
        iterator.restore(state)
    taken = [next(iterator) for _ in range(count)]
    state = iterator.state()
    iterator.close()
    return taken, state


def assert_same(found: list[dict], expected: list[dict]) -> None:
    assert len(found) == len(expected)
    for a, b in zip(found, expected):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from jaxcult.data import tfds as jt

    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    data = SHARED_DATA
    root = tmp_path_factory.mktemp("prepared")
    pawsx = root / "pawsx-files" / "pawsx"     # PAWS-X dev files; English dev doubles as train
    pawsx.mkdir(parents=True)
    for lang in ("en", "de"):
        shutil.copy(data / "pawsx" / "data" / "pawsx" / f"dev-{lang}.tsv", pawsx / f"dev-{lang}.tsv")
    shutil.copy(pawsx / "dev-en.tsv", pawsx / "train-en.tsv")
    squad = root / "squad-files"   # XQuAD's English file doubles as SQuAD train and dev
    (squad / "squad").mkdir(parents=True)
    (squad / "xquad").mkdir()
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        shutil.copy(data / "xquad" / "xquad.en.json", squad / "squad" / name)
    for lang in ("en", "de"):
        shutil.copy(data / "xquad" / f"xquad.{lang}.json", squad / "xquad" / f"xquad.{lang}.json")
    jt.prepare("jaxcult:xcopa", data_dir=root / "tfds", manual_dir=data)
    jt.prepare("jaxcult:squad", data_dir=root / "tfds", manual_dir=squad)
    jt.prepare("jaxcult:pawsx", data_dir=root / "tfds", manual_dir=root / "pawsx-files")
    return root


@pytest.mark.parametrize("dataset, overrides", [
    ("xcopa", ["data.name=xcopa", "task.name=multiple_choice", "data.target_languages=[et, zh]"]),
    ("pawsx", ["data.name=pawsx", "task.name=pair_classification", "data.target_languages=[de]",
               "data.eval_split=validation", "data.max_train_examples=600", "data.subsample=random",
               "data.length_buckets=[16, 32]"]),
    ("xquad", ["data.name=xquad", "task.name=extractive_qa", "data.target_languages=[de]",
               "model.max_length=96", "task.doc_stride=32", "data.max_train_examples=240"]),
])
def test_prepared_batches_equal_in_memory_batches_and_resume_with_workers(prepared, shared_data,
                                                                          dataset, overrides):
    files = {"xcopa": str(shared_data), "pawsx": str(prepared / "pawsx-files"),
             "xquad": str(prepared / "squad-files")}[dataset]
    _, memory = task_data([*overrides, f"data.manual_dir={files}"])
    _, streamed = task_data([*overrides, f"data.data_dir={prepared / 'tfds'}"])  # source: auto
    assert type(streamed.train).__name__ == "StreamedSplit"
    assert list((prepared / "tfds").rglob("jaxcult-index/*.npz"))   # lengths indexed once
    _, again = task_data([*overrides, f"data.data_dir={prepared / 'tfds'}"])
    np.testing.assert_array_equal(again.train.lengths, streamed.train.lengths)
    assert len(streamed.train) == len(memory.train)  # QA: windows, more than records
    np.testing.assert_array_equal(streamed.train.lengths, memory.train.lengths)
    for lang, split in memory.tests.items():
        assert_same([streamed.tests[lang].arrays], [split.arrays])
    expected, _ = batches(memory.train, 60)   # past an epoch boundary for both datasets
    assert_same(batches(streamed.train, 60)[0], expected)
    first, state = batches(streamed.train, 23, workers=1)
    assert_same(first, expected[:23])
    rest, _ = batches(streamed.train, 37, workers=1, state=state)
    assert_same(rest, expected[23:])


def test_prepared_source_errors(prepared, tmp_path):
    with pytest.raises(UserError, match="not prepared under"):
        task_data(["data.name=xnli", "task.name=pair_classification", "data.source=tfds",
                   f"data.data_dir={tmp_path}"])
    with pytest.raises(UserError, match="cannot be tokenised batch by batch"):
        task_data(["data.name=pawsx", "task.name=masked_lm", "task.options={pack: true}",
                   "data.source=tfds",
                   "data.eval_split=validation", "data.target_languages=[de]",
                   f"data.data_dir={prepared / 'tfds'}"])
    with pytest.raises(UserError, match="no prepared"):
        task_data(["data.source=tfds"])


@pytest.mark.parametrize("task", ["causal_lm", "masked_lm"])
def test_streamed_jsonl_shards_equal_in_memory_batches_and_resume(tmp_path, tiny_chat_model,
                                                                  task, monkeypatch, capsys):
    """`data.source: stream`: text_jsonl shards read by line offsets give the batches of the
    same lines read whole (train.jsonl), with workers and across a resume; masked LM's masks
    (seeded per text) are the same batch by batch as over the whole split. The length pass
    (here in chunks of 64 lines) reports its progress."""
    import json

    from jaxcult.data import prepared as prepared_module

    monkeypatch.setattr(prepared_module, "INDEX_CHUNK", 64)
    monkeypatch.setattr(prepared_module, "PROGRESS_SECONDS", 0.0)

    lines = [json.dumps({"text": f"Document {i}: " + "word " * (i % 13)}) for i in range(300)]
    whole, shards = tmp_path / "whole", tmp_path / "shards"
    for folder in (whole, shards):
        folder.mkdir()
        (folder / "validation.jsonl").write_text("\n".join(lines[:8]) + "\n")
    (whole / "train.jsonl").write_text("\n".join(lines) + "\n")
    for k in range(3):   # blank lines are skipped alike
        (shards / f"train-{k:05d}.jsonl").write_text("\n\n".join(lines[k * 100:(k + 1) * 100]))
    model = f"model.name={tiny_chat_model[0]}" if task == "causal_lm" else "model.name=minilm-l6"
    common = [model, f"task.name={task}", "data.name=text_jsonl", "data.eval_split=validation",
              "data.max_train_examples=250"]
    _, memory = task_data([*common, f"data.manual_dir={whole}"])
    _, streamed = task_data([*common, f"data.manual_dir={shards}", "data.source=stream"])
    assert type(streamed.train).__name__ == "StreamedSplit" and len(streamed.train) == 250
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("indexing")]
    assert [line.split(": ")[-1].split(" ")[0] for line in progress] == ["64/250", "128/250",
                                                                          "192/250", "250/250"]
    expected, _ = batches(memory.train, 40)
    assert_same(batches(streamed.train, 40)[0], expected)
    first, state = batches(streamed.train, 17, workers=1)
    rest, _ = batches(streamed.train, 23, workers=1, state=state)
    assert_same(first + rest, expected)
    (shards / "train-00001.jsonl").write_text('{"text": "fine"}\n{"txt": "broken"}\n')
    with pytest.raises(UserError, match=r"train-00001.jsonl:2: expected an object with a text"):
        task_data([*common, f"data.manual_dir={shards}", "data.source=stream"])
    with pytest.raises(UserError, match="not read from JSONL lines"):
        task_data(["data.source=stream"])
