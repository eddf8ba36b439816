"""Multiple choice on the real COPA/XCOPA files (skips when ../shared/data is absent)."""

from __future__ import annotations

import json

import pytest

from jaxcult import assets
from jaxcult.config_loading import load_config
from jaxcult.data import copa
from jaxcult.errors import UserError
from jaxcult.run.train import train as train_run
from jaxcult.rundir import check_writable


def test_record_counts_match_the_files(shared_data):
    assert len(copa.read_split(shared_data, "en", "train")) == 400
    assert len(copa.read_split(shared_data, "en", "validation")) == 100
    for lang in copa.XCOPA_LANGUAGES:
        assert len(copa.read_split(shared_data, lang, "test")) == 500
        assert len(copa.read_split(shared_data, lang, "validation")) == 100


def test_bad_records_are_named(tmp_path):
    folder = tmp_path / "xcopa" / "data" / "et"
    folder.mkdir(parents=True)
    (folder / "test.et.jsonl").write_text('{"premise": "p", "choice1": "a"}\n')
    with pytest.raises(UserError, match=r"test\.et\.jsonl:1: missing field"):
        copa.read_split(tmp_path, "et", "test")
    with pytest.raises(UserError, match="unknown language code 'xx'"):
        copa.read_split(tmp_path, "xx", "test")


@pytest.mark.skipif(not assets.get_asset("minilm-l6").installed(), reason="needs minilm-l6")
def test_multiple_choice_run_on_xcopa(shared_data, tmp_path):
    config = load_config(None, [
        "model.name=random", "model.tokenizer=minilm-l6", "model.max_length=48",
        "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 2,"
        " num_attention_heads: 2, intermediate_size: 37}",
        "task.name=multiple_choice", "data.name=xcopa", f"data.manual_dir={shared_data}",
        "data.target_languages=[et, zh]", "data.max_eval_examples=32", "trainer.steps=6",
        "trainer.batch_size=8", "schedule.name=fun", "schedule.k=2", "fisher.num_batches=1",
        "logging.tensorboard=false", "logging.progress=off"])
    run = check_writable(tmp_path / "run", overwrite=False, resume=False)
    summary = train_run(config, run)
    assert set(summary["metrics"]) == {"en", "et", "zh"}
    events = [json.loads(line) for line in run.events.read_text().splitlines()]
    assert [e["step"] for e in events] == [0, 2]
    assert events[1]["fisher"]
