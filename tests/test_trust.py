"""Nothing silently ignored, honest exits and reports (issue: trust and user experience)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import needs_minilm, tiny_model_yaml

from jaxcult import config as config_module
from jaxcult.cli import main
from jaxcult.config_loading import load_config
from jaxcult.errors import Interrupted, UserError
from jaxcult.run.build import build_run

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcult"
TINY = ["model.name=random", "model.tokenizer=minilm-l6", "model.max_length=16",
        "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, "
        "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 37}",
        "data.max_train_examples=64", "data.max_eval_examples=16", "data.target_languages=[en, de]",
        "trainer.batch_size=8", "trainer.eval_batch_size=16", "logging.tensorboard=false",
        "logging.progress=off", "checkpoint.async_save=false"]


def _plugin_settings() -> list[type]:
    """Every built-in plug-in's own settings class (beside its family's section)."""
    import jaxcult.data
    import jaxcult.eval
    import jaxcult.probes
    import jaxcult.schedules
    import jaxcult.tasks

    return sorted({entry.Settings for registry in (
        jaxcult.tasks.TASKS, jaxcult.data.DATASETS, jaxcult.schedules.SCHEDULES,
        jaxcult.eval.EVALUATORS, jaxcult.probes.PROBES) for _, entry in registry}, key=str)


def test_every_config_field_is_read_somewhere():
    """No dead fields: each field of each section, and each built-in plug-in's own setting, is
    read (as `section.field`, `..._config.field`, `settings.field`, or by name through
    `getattr` / `resolved`) by code outside the schema."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")
                       if p.name not in ("config.py", "config_loading.py"))
    run_fields = config_module.RunConfig.model_fields
    attribute = {f.annotation: name for name, f in run_fields.items()}  # section class -> key
    sections = [c for c in vars(config_module).values()
                if isinstance(c, type) and issubclass(c, config_module.Section)
                and c not in (config_module.Section, config_module.RunConfig)]
    unread = []
    for section in [*sections, *_plugin_settings()]:
        key = attribute.get(section, "config")
        for name in section.model_fields:
            if name in section.__mro__[1].model_fields and section not in sections:
                continue  # a family field, checked with the family's section
            pattern = (rf"\b\w*(?:{key}|config|settings)\.{name}\b"
                       rf"|(?:getattr|resolved)\(\w+, \"{name}\"\)")
            if not re.search(pattern, source):
                unread.append(f"{section.__name__}.{name}")
    assert unread == []


@pytest.mark.parametrize("overrides, message", [
    (["peft.lora_r=4"], "peft.lora_r has no effect here: it only applies to peft.kind=lora"),
    (["peft.kind=lora", "peft.reduction_factor=8"], "peft.reduction_factor has no effect"),
    (["peft.kind=none", "peft.leave_out=[1]"], "peft.leave_out has no effect"),
    (["optimizer.name=adam", "optimizer.weight_decay=0.1"], "optimizer.weight_decay has no effect"),
    (["optimizer.name=sgd", "optimizer.eps=1e-6"], "optimizer.eps has no effect"),
    (["schedule.name=gu", "schedule.order=[1, 0]"], "unknown key 'schedule.order' of schedule 'gu'"),
    (["schedule.name=fun", "schedule.seed=3"], "unknown key 'schedule.seed' of schedule 'fun'"),
    (["schedule.name=standard", "schedule.official_offset=true"], "schedule.official_offset has no"),
    (["schedule.name=gu", "schedule.options={a: 1}"], "unknown key 'schedule.a' of schedule 'gu'"),
    (["schedule.name=gu", "fisher.estimator=empirical"], "fisher.estimator has no effect"),
    (["fisher.ema=0.5"], "fisher.ema has no effect"),
    (["task.name=multiple_choice", "task.n_best=5"],
     "unknown key 'task.evaluators.0.n_best' of evaluator 'accuracy'"),
    (["task.name=causal_lm", "model.pooling=mean"],
     "unknown key 'task.pooling' of task family 'causal_lm'"),
    (["task.name=causal_lm", "task.evaluators=[perplexity, perplexity]"],
     "two evaluators report as 'perplexity'"),
    (["model.name=random", "model.overrides={model_type: bert, vocab_size: 9, hiden_size: 64}"],
     "model.overrides.hiden_size: not a setting of the bert architecture"),
    (["mesh.num_processes=2"], "mesh.num_processes has no effect"),
    (["data.source=files", "data.data_dir=/tmp"], "data.data_dir has no effect"),
])
def test_settings_without_effect_are_rejected(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(None, overrides)


def test_restating_a_default_is_harmless():
    load_config(None, ["schedule.name=gu", "fisher.estimator=sampled", "peft.kind=lora",
                       "peft.reduction_factor=16"])


def test_duplicate_yaml_keys_name_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("trainer:\n  steps: 3\nmodel:\n  name: x\ntrainer:\n  seed: 4\n")
    with pytest.raises(UserError, match=r"dup.yaml:5:1: invalid YAML: duplicate key 'trainer' "
                                        r"\(first given on line 1\)"):
        load_config(path)


@needs_minilm
def test_train_file_and_eval_split_apply_to_every_dataset(tmp_path):
    records = [{"text": f"sentence number {i}", "label": i % 8} for i in range(40)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))
    built = build_run(load_config(None, [*TINY, f"data.train_file={train}",
                                         "data.eval_split=validation", "data.max_eval_examples=500"]))
    assert len(built.data.train) == 38 and len(built.data.validation) == 2  # 5% held out
    assert len(built.data.tests["de"]) == 100  # the validation split, not the 400 of test
    with pytest.raises(UserError, match="nope.tsv: file not found"):
        build_run(load_config(None, [*TINY, "data.train_file=/does/not/exist/nope.tsv"]))


@needs_minilm
def test_leave_out_is_checked_and_honoured_by_lora():
    with pytest.raises(UserError, match="peft.leave_out: layer 99 does not exist .*2 layers"):
        build_run(load_config(None, [*TINY, "peft.leave_out=[99]"]))
    parts = build_run(load_config(None, [*TINY, "peft.kind=lora", "peft.leave_out=[0]"])).parts
    assert parts.groups == ["head", "lora/layer_1"]
    with pytest.raises(UserError, match="model.max_length: 600 tokens do not fit the model's "
                                        "position table of 512 positions"):
        build_run(load_config(None, [*TINY, "model.max_length=600"]))


def test_interrupted_runs_exit_with_the_signal_status(monkeypatch, capsys):
    from jaxcult.run import train as train_module

    def stopped(*args, **kwargs):
        raise Interrupted("stopped by SIGINT after step 3; checkpoint written", signal.SIGINT)

    monkeypatch.setattr(train_module, "train", stopped)
    assert main(["train", "--run-dir", "nowhere-run"]) == 130
    assert "stopped by SIGINT after step 3" in capsys.readouterr().err
    assert Interrupted("x", signal.SIGTERM).exit_code == 143


def test_subcommand_errors_show_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: jaxcult train")


def test_progress_eta_starts_after_the_compiling_step(monkeypatch):
    from jaxcult import tracking as jlog

    clock = iter([0.0, 30.0, 31.0, 40.0])  # construction, first step done (compile 30 s), ...
    monkeypatch.setattr(jlog.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = jlog.Progress(101, "lines", stream=out, every_seconds=0)
    progress.first_step_done(1)
    progress.update(11, 0.5)  # 10 steps in 1 s after the compile: eta 90 s, not 270
    assert "step 11/101 loss 0.5000 10.00 step/s eta 9s" in out.getvalue()


def test_fisher_plot_colours_by_depth_labels_events_and_keeps_the_legend_outside():
    from jaxcult.report import fisher_figure

    groups = [f"adapter/task/layer_{i}" for i in range(12)]
    fisher = [{"step": s, "trace": {"head": 1.0, **{g: 0.1 * (i + 1) for i, g in enumerate(groups)}}}
              for s in (0, 10, 20)]
    events = [{"step": 10, "event": "unfreeze", "groups": [groups[10]], "reason": "r"}]
    validation = [{"step": 10, "accuracy": 0.4}, {"step": 20, "accuracy": 0.6}]
    fig = fisher_figure(fisher, events, validation, "accuracy")
    ax, twin = fig.axes
    colours = [tuple(line.get_color()) for line in ax.get_lines()[:12]]
    assert len(set(colours)) == 12  # no two groups share a colour
    assert [t.get_text().strip() for t in ax.texts] == ["layer_10"]
    assert twin.get_ylim() == (0.0, 1.02)
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # right of the axes
    assert "validation accuracy" in [t.get_text() for t in legend.get_texts()]


def test_report_says_when_unfreezing_came_after_the_best_step(tmp_path):
    from jaxcult.report import write_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({
        "task": "classification", "dataset": "d", "source_language": "en",
        "primary_metric": "accuracy", "metrics": {"en": {"accuracy": 0.9, "by_type": {"a": 1}},
                                                  "de": {"accuracy": 0.7}},
        "average_excluding_source": {"accuracy": 0.7}, "best_step": 20}))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"step": 0, "event": "unfreeze", "groups": ["head"], "reason": "initial"},
        {"step": 10, "event": "unfreeze", "groups": ["g1"], "reason": "x"},
        {"step": 30, "event": "unfreeze", "groups": ["g2"], "reason": "x"}]))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "split": "train", "loss": 1.0,
                                                   "accuracy": 0.5}) + "\n")
    paths = write_report(run)
    report = (run / "report.md").read_text()
    assert "best validation step (20); the 1 unfreezing event(s) at or after it (first at step " \
           "30) did not affect them" in report
    assert (run / "plots" / "curves.png") in paths


@needs_minilm
def test_dry_run_activation_estimate_uses_the_layer_sizes():
    from jaxcult.run.dry_run import memory_estimate
    from jaxcult.sharding import make_mesh

    config = load_config(None, TINY)
    built = build_run(config)
    estimate = memory_estimate(config, built.plugins.task, built.parts, make_mesh(config.mesh))
    layers, tokens, hidden, inter, heads, length = 2, 8 * 16, 32, 37, 2, 16
    # by hand: 6 hidden + 2 key/value + 2 MLP vectors (an encoder's GELU MLP) in float32,
    # attention weights in float32 twice; an encoder classifier has no vocabulary logits
    per_token = (6 * hidden + 2 * hidden + 2 * inter) * 4 + heads * length * 8
    assert estimate["per_device_bytes"]["activations (estimate)"] == layers * tokens * per_token


def test_transformers_notice_about_pytorch_is_silenced(tmp_path):
    script = textwrap.dedent("""
        import importlib.util, sys
        real = importlib.util.find_spec  # as on a machine without PyTorch
        importlib.util.find_spec = lambda name, *a, **k: (
            None if name.split(".")[0] == "torch" else real(name, *a, **k))
        from jaxcult.cli import main
        sys.argv = ["jaxcult", "generate", "no-such-model", "--prompts", "p.jsonl", "--out", "o"]
        main(sys.argv[1:])
        import transformers  # imported by now or here: either way no notice
    """)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, env={k: v for k, v in os.environ.items()
                                            if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"})
    assert "PyTorch was not found" not in result.stderr, result.stderr[-2000:]


def test_compare_schedules_reuses_finished_runs_instead_of_overwriting(tmp_path):
    out = tmp_path / "compare"
    for name, value in (("standard", 0.5), ("gu", 0.6)):
        (out / name).mkdir(parents=True)
        (out / name / "summary.json").write_text(json.dumps({
            "primary_metric": "accuracy", "metrics": {"en": {"accuracy": 0.9}, "de": {"accuracy": value}},
            "average_excluding_source": {"accuracy": value}}))
    script = PACKAGE.parent / "scripts" / "compare_schedules.py"
    result = subprocess.run([sys.executable, str(script), "experiments/default.yaml", "--out",
                             str(out), "--schedules", "standard", "gu"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("finished earlier, reused") == 2
    assert "| gu | 90.0 | 60.0 | 60.0 |" in result.stdout


@needs_minilm
def test_resume_refuses_an_edited_config_and_names_the_keys(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text("name: tiny\n" + tiny_model_yaml() + textwrap.dedent("""\
        data: {max_train_examples: 64, max_eval_examples: 16, target_languages: [en, de]}
        trainer: {batch_size: 8, eval_batch_size: 16, steps: 2}
        schedule: {name: standard}
        logging: {tensorboard: false, progress: "off"}
        checkpoint: {async_save: false}
        """))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run)]) == 0
    assert "run directory: " in capsys.readouterr().err
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("batch_size: 8", "batch_size: 4"))
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml: changed since the checkpoint was written (trainer.batch_size: 8 -> 4)" in err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_structural_mismatch_is_reported_as_such():
    from jaxcult.run.single import resumable
    from jaxcult.rundir import RunDir

    record = {"config": {"a": 1}, "structure": {".params['head']['w']": [4, 2]}}
    check = resumable(record, RunDir(Path("run")))
    check({"run": record})
    with pytest.raises(UserError, match=r"written for another model or optimizer structure \(e.g. "
                                        r"\.params\['head'\]\['w'\]: shape \[4, 3\] in the checkpoint"):
        check({"run": {"config": {"a": 1}, "structure": {".params['head']['w']": [4, 3]}}})


def test_built_in_dataset_mixes_one_and_two_topic_sentences_deterministically():
    from jaxcult.data import multilingual
    from jaxcult.data.multilingual_lexicon import FRAMES

    for language in multilingual.LANGUAGES:
        test = multilingual.generate(language, "test")
        kinds = [e["kind"] for e in test]
        assert kinds.count("two_topic") == 240 and kinds.count("one_topic") == 160
        assert test == multilingual.generate(language, "test")
    english_cues = {"because", "so"}
    for language, frames in FRAMES.items():  # targets paraphrase; they never reuse the cues
        words = set(re.findall(r"\w+", " ".join(frames).lower()))
        assert (words & english_cues) == (english_cues if language == "en" else set()), language
    two = next(e for e in multilingual.generate("en", "train") if e["kind"] == "two_topic")
    assert " because " in two["text"] or ", so " in two["text"]


@pytest.mark.slow
@needs_minilm
def test_default_experiment_separates_languages(tmp_path):
    """The offline default: source >= 90%, targets well below it and differing per language,
    validation still rising while groups open."""
    import time

    start = time.perf_counter()
    assert main(["train", "--run-dir", str(tmp_path / "run")]) == 0
    elapsed = time.perf_counter() - start
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    scores = {lang: m["accuracy"] for lang, m in summary["metrics"].items()}
    targets = [v for lang, v in scores.items() if lang != "en"]
    assert scores["en"] >= 0.9 and 0.55 <= sum(targets) / len(targets) <= 0.9
    assert max(targets) - min(targets) >= 0.05
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validation = [r["accuracy"] for r in rows if r["split"] == "validation"]
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    last_event = max(e["step"] for e in events)
    rising = [r["accuracy"] for r in rows if r["split"] == "validation" and r["step"] <= last_event]
    assert rising[-1] - rising[0] >= 0.3 and summary["best_step"] >= last_event
    assert max(validation) >= 0.9 and elapsed < 600
