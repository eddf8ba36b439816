"""End-to-end classification training on a tiny random encoder: schedules, compile-once, outputs."""

from __future__ import annotations

import json

import jax
import pytest

from jaxcult import assets
from jaxcult.config_loading import load_config
from jaxcult.run import single
from jaxcult.run.train import train as train_run
from jaxcult.rundir import check_writable

pytestmark = pytest.mark.skipif(not assets.get_asset("minilm-l6").installed(),
                                reason="asset minilm-l6 not installed (jaxcult assets install minilm-l6)")

TINY = [
    "model.name=random", "model.tokenizer=minilm-l6", "model.max_length=24",
    "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 4,"
    " num_attention_heads: 2, intermediate_size: 37}",
    "data.max_train_examples=256", "data.max_eval_examples=32", "data.target_languages=[en, de]",
    "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.log_every=4",
    "logging.tensorboard=false", "logging.progress=off",
]


@pytest.fixture
def programs(monkeypatch):
    created = []

    class Recording(single.TrainProgram):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.compiled_ahead = None
            created.append(self)

        def precompile(self, *args, **kwargs):
            self.compiled_ahead = []  # filled by `step_compilations` while this runs
            super().precompile(*args, **kwargs)

    monkeypatch.setattr(single, "TrainProgram", Recording)
    return created


def train(tmp_path, *overrides):
    config = load_config(None, [*TINY, *overrides])
    run = check_writable(tmp_path / "run", overwrite=False, resume=False)
    return run, train_run(config, run)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("schedule", ["gu", "fun"])
def test_scheduled_run_compiles_once_and_logs(tmp_path, programs, schedule):
    run, summary = train(tmp_path, f"schedule.name={schedule}", "schedule.k=3", "trainer.steps=12",
                         "fisher.track_every=6", "fisher.num_batches=2")
    events = read(run.events)
    assert [e["step"] for e in events] == [0, 3, 6, 9]
    opened = [g for e in events[1:] for g in e["groups"]]
    if schedule == "gu":
        assert opened == ["adapter/task/layer_2", "adapter/task/layer_1", "adapter/task/layer_0"]
    else:
        for event in events[1:]:
            frozen = [g for g in event["fisher"] if g not in
                      {x for e in events[:events.index(event)] for x in e["groups"]}]
            assert event["groups"] == [max(frozen, key=event["fisher"].get)]
    assert programs[0].train_step._cache_size() == 1
    assert summary["source_language"] == "en" and set(summary["metrics"]) == {"en", "de"}
    assert set(summary["average_excluding_source"]) == {"accuracy"}
    assert len(summary["trainable_groups_final"]) == 5
    fisher = read(run.fisher)
    assert fisher and all(set(r["trace"]) == {"head", *(f"adapter/task/layer_{i}" for i in range(4))}
                          for r in fisher)
    metrics = read(run.metrics)
    assert any(r["split"] == "train" and "loss" in r for r in metrics)
    assert (run.plots / "fisher.png").exists() and (run.plots / "eval.png").exists()
    assert run.report.exists()


@pytest.fixture
def step_compilations(programs):
    """Names of the train-step programs XLA compiles, each also added to the `compiled_ahead`
    list of the program precompiling at that moment."""
    compiled = []

    def listen(event, duration, fun_name="", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and "_train_step" in fun_name:
            compiled.append(fun_name)
            for program in programs:
                if isinstance(program.compiled_ahead, list):
                    program.compiled_ahead.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield compiled
    jax.monitoring.unregister_event_duration_listener(listen)


def test_every_bucket_program_is_compiled_before_the_first_step(tmp_path, programs,
                                                                  step_compilations, monkeypatch):
    """Length buckets: the step programs of every batch shape compile together before step 1
    (several at a time), the loop compiles nothing more, and the run is the same as one that
    compiles each program when its first batch arrives."""
    bucketed = ["schedule.name=gu", "schedule.k=3", "trainer.steps=8", "data.length_buckets=[8, 16]",
                "data.length_grouping=4"]
    ahead, _ = train(tmp_path / "ahead", *bucketed)
    assert len(step_compilations) >= 2 and programs[0].compiled_ahead == step_compilations
    step_compilations.clear()
    monkeypatch.setattr(single, "precompile_steps", lambda session, first: None)
    lazily, _ = train(tmp_path / "lazily", *bucketed)
    assert len(step_compilations) >= 2 and programs[1].compiled_ahead is None
    assert [r["loss"] for r in read(ahead.metrics) if "loss" in r] == \
        [r["loss"] for r in read(lazily.metrics) if "loss" in r]


def test_nonfinite_loss_stops_with_clear_error(tmp_path):
    from jaxcult.errors import UserError

    with pytest.raises(UserError, match="step 2"):
        train(tmp_path, "schedule.name=standard", "trainer.steps=4", "trainer.inject_nonfinite_at=2")


def test_nonfinite_skip_keeps_training(tmp_path):
    run, summary = train(tmp_path, "schedule.name=standard", "trainer.steps=4",
                         "trainer.inject_nonfinite_at=2", "trainer.on_nonfinite=skip",
                         "trainer.log_every=1")
    finite = [r["finite"] for r in read(run.metrics) if r["split"] == "train"]
    assert finite == [1.0, 0.0, 1.0, 1.0]
    assert summary["metrics"]


def test_bfloat16_params_and_compute_train(tmp_path):
    run, summary = train(tmp_path, "schedule.name=standard", "trainer.steps=3",
                         "model.dtype=bfloat16", "model.compute_dtype=bfloat16")
    losses = [r["loss"] for r in read(run.metrics) if r["split"] == "train"]
    assert losses and all(loss == loss for loss in losses)  # finite, not NaN
    assert 0.0 <= summary["metrics"]["de"]["accuracy"] <= 1.0


def test_in_step_tracking_logs_every_step(tmp_path):
    run, _ = train(tmp_path, "schedule.name=gu", "schedule.k=2", "trainer.steps=4", "fisher.in_step=true")
    lines = [r for r in read(run.fisher) if r["estimator"] == "empirical_batch_in_step"]
    assert [r["step"] for r in lines] == [0, 1, 2, 3]
    assert all(len(r["trace"]) == 5 and all(v >= 0 for v in r["trace"].values()) for r in lines)


def test_lora_groups_train_under_a_schedule(tmp_path):
    run, summary = train(tmp_path, "peft.kind=lora", "peft.lora_r=2", "schedule.name=gu",
                         "schedule.k=1", "trainer.steps=10", "peft.lora_groups=module")
    first = read(run.events)[0]["groups"]
    assert first == ["head", "lora/layer_3/value"]
    assert len(summary["trainable_groups_final"]) == 9  # head + (query, value) x 4 layers


def test_export_peft_from_a_lora_run(tmp_path, capsys):
    import numpy as np
    from safetensors.numpy import load_file

    from jaxcult.cli import main

    run, _ = train(tmp_path, "peft.kind=lora", "peft.lora_r=2", "schedule.name=standard",
                   "trainer.steps=3")
    assert main(["export", str(run.root), "--format", "peft", "--out", str(tmp_path / "refused")]) == 2
    assert "pass --no-head" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(["export", str(run.root), "--format", "peft", "--out", str(tmp_path / "peft"),
                 "--no-head"]) == 0
    assert load_file(str(tmp_path / "peft" / "jaxcult_head.safetensors"))  # the head, beside
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"] == ["query", "value"]
    tensors = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert len(tensors) == 16
    key = "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"
    assert np.abs(tensors[key]).max() > 0  # trained, not the zero init
    assert main(["export", str(run.root), "--format", "adapterhub", "--out",
                 str(tmp_path / "ah")]) == 2
    assert "holds bottleneck adapters" in capsys.readouterr().err


def test_export_adapterhub_from_a_pfeiffer_run(tmp_path):
    import numpy as np

    from jaxcult.cli import main
    from jaxcult.hub import adapterhub
    from jaxcult.run.restore import load_run_model

    run, _ = train(tmp_path, "peft.kind=pfeiffer", "peft.reduction_factor=4",
                   "schedule.name=standard", "trainer.steps=3")
    out = tmp_path / "ah"
    assert main(["export", str(run.root), "--format", "adapterhub", "--out", str(out),
                 "--name", "topics"]) == 0
    hub = adapterhub.read_adapterhub(out)
    assert hub.name == "topics" and hub.config.kind == "pfeiffer" and hub.head is not None
    assert len(hub.tensors) == 4 * 4 and hub.head["config"]["num_labels"] == 8
    _, model = load_run_model(run.root)
    up = hub.tensors["encoder.layer.2.output.adapters.topics.adapter_up.weight"]
    np.testing.assert_array_equal(up, np.asarray(model.encoder.layers[2].output_adapter.up.kernel[...]).T)
    assert np.abs(up).max() > 0


def test_eval_rescores_the_best_checkpoint(tmp_path, capsys):
    from jaxcult.cli import main

    run, summary = train(tmp_path, "schedule.name=standard", "trainer.steps=3")
    capsys.readouterr()
    assert main(["eval", str(run.root), "--languages", "de", "ru", "data.max_eval_examples=32"]) == 0
    out = capsys.readouterr().out
    assert "ru" in out and "de" in out
    written = sorted((run.root / "evaluations").glob("*.json"))
    rescored = json.loads(written[-1].read_text())
    assert set(rescored["metrics"]) == {"de", "ru"}
    assert rescored["metrics"]["de"]["accuracy"] == summary["metrics"]["de"]["accuracy"]
    assert main(["eval", str(run.root), "model.name=other"]) == 2
    assert "cannot change at evaluation" in capsys.readouterr().err
