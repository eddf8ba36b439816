"""Runs that cannot collide and settings that fail before the expensive part: one writer per run
directory (a real second process races it), a stale lock taken over with a note, a resume with
nothing saved, unbounded generation, a stride the tokenizer cannot honour, and messages that
agree with what happened."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_minilm, tiny_model_yaml

from jaxcult.cli import main
from jaxcult.errors import UserError
from jaxcult.locks import LOCK_NAME, FolderLock, held_by


def tiny_yaml(steps: int) -> str:
    return "name: tiny\n" + tiny_model_yaml() + textwrap.dedent(f"""\
        data: {{max_train_examples: 64, max_eval_examples: 16, target_languages: [en, de]}}
        trainer: {{batch_size: 8, eval_batch_size: 16, steps: {steps}}}
        schedule: {{name: standard}}
        logging: {{tensorboard: false, progress: "off"}}
        checkpoint: {{async_save: false}}
        """)


@needs_minilm
def test_a_second_writer_is_refused_naming_the_holder_and_readers_wait(tmp_path, capsys):
    """A trains; B (this process) tries the same --run-dir, then eval and export of it: each
    exits 2 naming A's pid and changes nothing; A's run ends as if alone."""
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=30))
    run = tmp_path / "run"
    writer = subprocess.Popen([sys.executable, "-m", "jaxcult.cli", "train", "tiny.yaml",
                               "--run-dir", "run"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while held_by(run) is None:
            assert writer.poll() is None and time.monotonic() < deadline, writer.communicate()
            time.sleep(0.02)
        holder = f"pid {writer.pid} on "
        attempts = [["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run)],
                    ["eval", str(run)],
                    ["export", str(run), "--format", "adapterhub", "--out", str(tmp_path / "x")]]
        for attempt in attempts:
            assert main(attempt) == 2, attempt
            err = capsys.readouterr().err
            assert holder in err, err
        assert "still being trained" in err and "--latest-checkpoint" in err
        assert not (tmp_path / "x").exists()
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err[-3000:]
    assert out.rstrip().endswith("run directory: run")  # repeated at the end
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # one writer's rows, in order
    assert held_by(run) is None


def test_a_lock_left_by_a_killed_writer_is_taken_over_with_a_note(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text('{"pid": 4242, "host": "node7", "started": "2026-01-02T03:04:05"}')
    with caplog.at_level(logging.WARNING, logger="jaxcult.locks"), FolderLock(folder, "run directory"):
        assert f"pid {os.getpid()} on " in held_by(folder)
    assert "took over the lock left by a run directory writer that has ended (pid 4242 on " \
           "node7 since 2026-01-02T03:04:05)" in caplog.text
    assert held_by(folder) is None and (folder / LOCK_NAME).read_text() == ""


def test_a_seed_of_a_multi_seed_run_in_training_is_refused(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=2))
    (tmp_path / "run" / "seed-0").mkdir(parents=True)
    with FolderLock(tmp_path / "run"):
        assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir",
                     str(tmp_path / "run" / "seed-0"), "--overwrite"]) == 2
    assert f"seed-0: a seed of the multi-seed run in {tmp_path}/run, which is being trained " \
           f"(pid {os.getpid()} on " in capsys.readouterr().err


def test_a_writer_that_fails_before_writing_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError), FolderLock(tmp_path / "new"):
        raise RuntimeError("config error after the lock")
    assert not (tmp_path / "new").exists()


@needs_minilm
def test_resume_without_a_saved_checkpoint_fails_before_loading(tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=2))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    for step in (run / "checkpoints").iterdir():
        __import__("shutil").rmtree(step)
    import jaxcult.run.single as single

    monkeypatch.setattr(single, "build_run", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["train", "--resume", str(run)]) == 2
    assert "checkpoints: cannot resume: no checkpoint was saved (the folder is empty)" in \
        capsys.readouterr().err
    (run / "checkpoints").rmdir()
    assert main(["train", "--resume", str(run)]) == 2
    assert "(the folder is missing)" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def _llama(max_positions: int):
    from jaxcult.models.decoder import DecoderConfig

    return DecoderConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=max_positions)


@pytest.mark.parametrize("setting, free, message", [
    ({"max_new_tokens": 100_000_000}, None,
     r"generation\.max_new_tokens=100000000: the model's context is 2048 positions, so after a "
     r"prompt of 32 .* at most 2016 new tokens fit"),
    ({"max_new_tokens": 2000, "batch_size": 64}, 2**20,
     r"generation: a KV cache of generation\.batch_size=64 x 2512 positions .* needs 20 MiB "
     r"per device, 1 MiB is free"),
    ({"max_new_tokens": 2000, "batch_size": 64, "prefix_cache_mb": 100}, 2**20 * 110,
     r"generation: a KV cache .* plus the 100 MiB prefix cache needs 120 MiB per device, 110 "
     r"MiB is free; lower .* or prefix_cache_mb"),
])
def test_generation_beyond_context_or_memory_is_refused_before_allocating(setting, free, message):
    from jaxcult.config import GenerationConfig
    from jaxcult.generation.limits import check_generation_fits, kv_cache_bytes

    config = GenerationConfig(**setting)
    with pytest.raises(UserError, match=message):
        check_generation_fits(_llama(2048), config, free=free)
    check_generation_fits(_llama(2048), GenerationConfig(max_new_tokens=2016), free=None)
    # keys + values, 2 layers, 1 kv head of 8 dims, float32: 128 bytes per position
    assert kv_cache_bytes(_llama(2048), 4, 100) == 4 * 100 * 128


@needs_minilm
def test_a_stride_the_window_cannot_hold_names_both_keys(tmp_path):
    from jaxcult.data import squad
    from jaxcult.hub.pretrained import load_pretrained

    tokenizer = load_pretrained("minilm-l6")[1]
    records = [{"id": "short", "question": "Who?", "context": "Ana went home. " * 30,
                "answers": ["Ana"], "starts": [0]},
               {"id": "q-long", "question": "what is the name of the person " * 5,
                "context": "Ana went home. " * 30, "answers": ["Ana"], "starts": [0]}]
    with pytest.raises(UserError, match=r"s: question 'q-long' takes 35 tokens, leaving 26 of "
                       r"model\.max_length=64 for its context, which must exceed "
                       r"task\.doc_stride=30; raise model\.max_length or lower task\.doc_stride"):
        squad.tokenize_windows(records, tokenizer, 64, 30, "s")
    assert len(squad.tokenize_windows(records, tokenizer, 64, 25, "s").arrays["labels"]) > 2


class _Program:
    """A train step that only counts, and sends SIGINT to this process at one step."""

    def __init__(self, signal_at: int | None) -> None:
        self.signal_at, self.calls = signal_at, 0

    def train_step(self, state, frozen, batch):
        self.calls += 1
        if self.calls == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return state, {}


@pytest.mark.parametrize("where", ["during a step", "during the hooks after it"])
def test_the_stop_message_names_the_step_the_run_stops_after(where, caplog):
    from jaxcult.trainers.loop import StopSignal, TrainLoop

    program = _Program(signal_at=3 if where == "during a step" else None)
    loop = TrainLoop(program, state=None, frozen=None, batches=iter(range(100)),
                     place=lambda b: b, steps=10)
    if where != "during a step":
        loop.add_hook(lambda _, done: done == 3 and os.kill(os.getpid(), signal.SIGINT), every=1)
    with caplog.at_level(logging.WARNING), StopSignal() as stop:
        stopped = loop.run(0, stop)
    assert stopped == 3 and "SIGINT: stopping after step 3;" in caplog.text


def test_eta_follows_the_recent_rate(monkeypatch):
    """Fast at first, then three times slower: the ETA follows the last minute, not the mean."""
    from jaxcult import tracking

    times = iter([0.0, 0.0, *np.arange(10.0, 200.0, 10.0)])
    monkeypatch.setattr(tracking.time, "monotonic", lambda: next(times))
    out = io.StringIO()
    progress = tracking.Progress(1000, "lines", stream=out, every_seconds=0)
    progress.first_step_done(0)
    step = 0
    for second in np.arange(10.0, 200.0, 10.0):
        step += 30 if second <= 60 else 10  # 3 step/s for a minute, then 1 step/s
        progress.update(step)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"step {step}/1000") and " 1.00 step/s eta " in last, last


def _finished_run(root):
    """The files `jaxcult plot` reads, as a finished run leaves them."""
    (root / "plots").mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({
        "task": "classification", "dataset": "toy", "source_language": "en",
        "primary_metric": "accuracy", "best_step": 2, "average_excluding_source": {"accuracy": 0.5},
        "metrics": {"en": {"accuracy": 0.75}, "de": {"accuracy": 0.5}}}))
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "split": "train", "loss": 0.7, "accuracy": 0.5},
        {"step": 2, "split": "train", "loss": 0.6, "accuracy": 0.6},
        {"step": 2, "split": "validation", "accuracy": 0.75}]))
    (root / "events.jsonl").write_text(json.dumps({"step": 0, "event": "unfreeze",
                                                   "groups": ["head"], "reason": "initial"}) + "\n")
    (root / "fisher.jsonl").write_text(json.dumps({"step": 1, "trace": {"layer_0": 0.5}}) + "\n")


@pytest.mark.parametrize("damage, message", [
    (("metrics.jsonl", b'{"step": 1, "split": "train"}\n{"step": 2, "split": "tr\xe4in"}\n'),
     r"metrics\.jsonl:2: not UTF-8 text \(byte 0xe4\); the file is damaged"),
    (("metrics.jsonl", b'{"step": 1, "split": "train"}\n[1, 2]\n'),
     r"metrics\.jsonl:2: expected a JSON object, found a list"),
    (("events.jsonl", b'{"step": 3, "event": "unfreeze", "reason": "fun"}\n'),
     r"events\.jsonl:1: missing 'groups'"),
    (("summary.json", b'{"task": "classification", "metrics": {"en": {"accur'),
     r"summary\.json:1: not valid JSON \(cut short\?\)"),
])
def test_plot_of_a_damaged_run_is_one_line_and_keeps_the_old_plots(tmp_path, capsys, damage,
                                                                     message):
    import re

    root = tmp_path / "run"
    _finished_run(root)
    assert main(["plot", str(root)]) == 0
    before = {p.name: p.read_bytes() for p in (root / "plots").iterdir()}
    report = (root / "report.md").read_text()
    name, content = damage
    (root / name).write_bytes(content)
    capsys.readouterr()
    assert main(["plot", str(root)]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert {p.name: p.read_bytes() for p in (root / "plots").iterdir()} == before
    assert (root / "report.md").read_text() == report


FAULT_RUN = ["trainer.steps=12", "trainer.log_every=1", "checkpoint.every=4",
             "trainer.eval_every=6"]


def _train(tmp_path, name: str, *extra: str) -> int:
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=12))
    return main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(tmp_path / name),
                 *FAULT_RUN, *extra])


def _outcome(run) -> tuple:
    """What an interrupted-then-resumed run must reproduce: every logged record but timings,
    the summary's scores, the report's text."""
    summary = json.loads((run / "summary.json").read_text())
    records = [{k: v for k, v in json.loads(x).items() if k != "steps_per_second"}
               for x in (run / "metrics.jsonl").read_text().splitlines()]
    return (records, (run / "events.jsonl").read_text(), summary["metrics"],
            summary["best_step"], (run / "report.md").read_text().replace(run.name, "RUN"),
            sorted(p.name for p in (run / "plots").iterdir()))


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    root = tmp_path_factory.mktemp("undisturbed")
    assert _train(root, "run") == 0
    return _outcome(root / "run")


def _fail_replace_of(name: str):
    """os.replace that fails, as a full disk would, when it would create `name`."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)
    return replace


def _fail_nth(real, n: int, error: Exception, when=lambda *a, **k: True):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise error
        return real(*args, **kwargs)
    return wrapper


@needs_minilm
@pytest.mark.slow
@pytest.mark.parametrize("site", ["checkpoint", "metrics", "summary", "report", "plots"])
def test_a_write_failing_at_any_site_is_one_line_and_resume_ends_as_undisturbed(
        tmp_path, capsys, monkeypatch, undisturbed, site):
    from jaxcult import checkpoint, tracking

    full = OSError(28, "No space left on device")
    if site == "checkpoint":  # the second save (step 8), inside Orbax
        monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save",
                            _fail_nth(checkpoint.ocp.CheckpointManager.save, 2, full))
    elif site == "metrics":  # the 7th record (after the step-4 checkpoint)
        monkeypatch.setattr(tracking.JsonlWriter, "write", _fail_nth(
            tracking.JsonlWriter.write, 7, OSError(28, "No space left on device", "metrics.jsonl"),
            when=lambda self, record: self._path.name == "metrics.jsonl"))
    else:
        monkeypatch.setattr(os, "replace", _fail_replace_of(
            {"summary": "summary.json", "report": "report.md", "plots": "curves.png"}[site]))
    assert _train(tmp_path, "run") == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert len(errors) == 1 and ("No space left on device" in errors[0]), errors
    assert not [p for p in (tmp_path / "run").rglob("*") if "tmp" in p.name]  # temporaries gone
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert _outcome(tmp_path / "run") == undisturbed


@needs_minilm
@pytest.mark.slow
def test_a_run_killed_at_any_moment_resumes_to_the_undisturbed_result(tmp_path, undisturbed):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=12))
    killed = subprocess.Popen([sys.executable, "-m", "jaxcult.cli", "train", "tiny.yaml",
                               "--run-dir", "run", *FAULT_RUN], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 6):
        assert killed.poll() is None
        time.sleep(0.005)
    killed.kill()
    killed.wait()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert _outcome(tmp_path / "run") == undisturbed


KILL_AT = """
import os, sys
from jaxcult import tracking
from jaxcult.cli import main

site, args = sys.argv[1], sys.argv[2:]
writes = {"n": 0}


def dies(real, when):
    def wrapper(*a, **k):
        if when(*a, **k):
            os._exit(137)  # as kill -9 here: no cleanup, nothing flushed
        return real(*a, **k)
    return wrapper


def seventh_metrics_record(writer, record):
    writes["n"] += writer._path.name == "metrics.jsonl"
    return writer._path.name == "metrics.jsonl" and writes["n"] == 7


named = {"summary": "summary.json", "report": "report.md", "plots": "curves.png"}
if site == "checkpoint":  # step 8's items written, its folder not yet renamed into place
    os.rename = dies(os.rename, lambda src, dst: os.path.basename(src).startswith("8.orbax"))
elif site == "metrics":
    tracking.JsonlWriter.write = dies(tracking.JsonlWriter.write, seventh_metrics_record)
else:
    os.replace = dies(os.replace, lambda src, dst, *a: os.path.basename(dst) == named[site])
sys.exit(main(args))
"""


@needs_minilm
@pytest.mark.slow
@pytest.mark.parametrize("site", ["checkpoint", "metrics", "summary", "report", "plots"])
def test_a_run_killed_at_any_write_site_resumes_to_the_undisturbed_result(tmp_path, undisturbed,
                                                                         site):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=12))
    killed = subprocess.run([sys.executable, "-c", KILL_AT, site, "train", "tiny.yaml",
                             "--run-dir", "run", *FAULT_RUN], cwd=tmp_path, capture_output=True,
                            text=True)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert _outcome(tmp_path / "run") == undisturbed


def test_a_log_line_that_cannot_be_written_whole_is_undone(tmp_path, monkeypatch):
    from jaxcult.tracking import JsonlWriter

    writer = JsonlWriter(tmp_path / "metrics.jsonl")
    writer.write({"step": 1, "loss": 0.5})
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[:5]))  # the disk fills
    with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.jsonl'"):
        writer.write({"step": 2, "loss": 0.25})
    monkeypatch.undo()
    writer.write({"step": 3, "loss": 0.125})
    writer.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] \
        == [1, 3]


@needs_minilm
def test_a_checkpoint_the_filesystem_refuses_is_one_line_and_leaves_no_temporaries(tmp_path):
    """A real OS failure (a file-size limit, as a full disk fails) inside Orbax's writer
    threads: one line naming the folder and the OS's reason, exit 2, no temporary folders."""
    (tmp_path / "tiny.yaml").write_text(tiny_yaml(steps=8))
    limited = f"ulimit -f 3; trap '' XFSZ; exec {sys.executable} -m jaxcult.cli train tiny.yaml " \
              f"--run-dir run checkpoint.every=4"  # files up to 3 KiB; no signal, an error
    result = subprocess.run(["bash", "-c", limited], cwd=tmp_path, capture_output=True, text=True)
    lines = result.stderr.splitlines()  # as filed: 725 lines of thread tracebacks
    assert result.returncode == 2 and len(lines) < 20, result.stderr[-3000:]
    assert [x for x in lines if x.startswith("error")] == [
        f"error: {tmp_path}/run/checkpoints: a checkpoint could not be written (File too large, "
        f"errno 27); the checkpoints before it are intact, and --resume continues from the newest "
        f"of them"]
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_a_disk_without_room_for_a_checkpoint_fails_before_writing(tmp_path, monkeypatch):
    import shutil

    import jax.numpy as jnp

    from jaxcult.checkpoint import Checkpointer
    from jaxcult.config import CheckpointConfig

    checkpointer = Checkpointer(tmp_path / "checkpoints", CheckpointConfig(async_save=False))
    checkpointer.save(1, {"state": {"w": jnp.ones((256, 256))}}, {"step": 1})
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1, 1, 2**17))
    with pytest.raises(UserError, match=r"checkpoints: a checkpoint could not be written \(No "
                       r"space left on device: 0\.2 MiB needed, 0\.1 MiB free\)"):
        checkpointer.save(2, {"state": {"w": jnp.ones((256, 256))}}, {"step": 2})
    checkpointer.close()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["1"]


@pytest.mark.parametrize("setting, message", [
    ("max_new_tokens=100000000", r"generation\.max_new_tokens=100000000: the model's context is "
                                 r"2048 positions"),
    ("max_new_tokens=2000 batch_size=100000000", r"generation: a KV cache of "
                                                 r"generation\.batch_size=100000000 x 2512"),
])
def test_jaxcult_generate_refuses_what_cannot_fit_in_one_line(tiny_chat_model, tmp_path, capsys,
                                                              setting, message):
    """As filed, the first hung in the decode loop and the second ended in an allocator's
    traceback; nothing is written."""
    import re

    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Hello"}\n')
    code = main(["generate", str(tiny_chat_model[0]), "--prompts", str(tmp_path / "prompts.jsonl"),
                 "--out", str(tmp_path / "out.jsonl"), *setting.split()])
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert code == 2 and len(errors) == 1 and re.search(message, errors[0]), errors
    assert not (tmp_path / "out.jsonl").exists()


def test_unfreezing_decisions_are_shown_on_the_console(caplog):
    import dataclasses
    from types import SimpleNamespace

    import jax.numpy as jnp

    from jaxcult.schedules.base import Decision
    from jaxcult.trainers.hooks import schedule_decisions

    @dataclasses.dataclass
    class State:
        mask: jnp.ndarray

        def replace(self, **changes):
            return dataclasses.replace(self, **changes)

    class Schedule:
        def is_check(self, step):
            return step == 5

        def decide(self, step, mask, traces):
            return Decision(np.ones_like(mask), [{"step": step, "event": "unfreeze", "reason": "fun",
                                                  "groups": ["layer_3", "layer_4"], "fisher": {}}])

    logged = []
    before = schedule_decisions(Schedule(), fishers=None,
                                logger=SimpleNamespace(log_event=logged.append))
    loop = SimpleNamespace(state=State(jnp.zeros(3, bool)))
    with caplog.at_level(logging.INFO, logger="jaxcult"):
        before(loop, 4)
        before(loop, 5)
    assert "step 5: unfreeze layer_3, layer_4 (fun)" in caplog.text and len(logged) == 1
    assert bool(loop.state.mask.all())


def _write_fails_once(monkeypatch, starts_with: bytes):
    """os.write fails, as a full disk does, for the first record beginning `starts_with`."""
    real, failed = os.write, []

    def write(fd, data):
        if bytes(data).startswith(starts_with) and not failed:
            failed.append(True)
            raise OSError(28, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


def test_a_recipe_stage_whose_write_fails_reruns_to_the_undisturbed_outputs(tmp_path, capsys,
                                                                              monkeypatch):
    """The toy recipe of tests/plugins: `count` appends records one by one; the disk fills at
    the fourth. One line, exit 2, three whole records kept; the rerun finishes them."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    monkeypatch.setenv("JAXCULT_RECIPES", "toy_recipe:RECIPE")
    (tmp_path / "toy.yaml").write_text("numbers: 6\nscale: 3\n")
    command = ["toy", "run", str(tmp_path / "toy.yaml"), "--out"]
    assert main([*command, str(tmp_path / "calm")]) == 0
    with monkeypatch.context() as patch:
        _write_fails_once(patch, b'{"n": 3')
        assert main([*command, str(tmp_path / "out")]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert errors == [f"error: {tmp_path}/out/numbers.jsonl: No space left on device"]
    assert len((tmp_path / "out" / "numbers.jsonl").read_text().splitlines()) == 3
    assert main([*command, str(tmp_path / "out")]) == 0
    for name in ("numbers.jsonl", "total.json"):
        assert (tmp_path / "out" / name).read_text() == (tmp_path / "calm" / name).read_text()


@needs_minilm
@pytest.mark.slow
def test_a_predictions_file_that_fails_to_write_resumes_to_the_undisturbed_result(
        tmp_path, capsys, monkeypatch):
    from test_tasks import ARTICLES, TINY, squad_file

    from jaxcult.data import squad

    root = tmp_path / "data"
    squad_file(root / "squad" / "train-v1.1.json", ARTICLES * 6)
    squad_file(root / "squad" / "dev-v1.1.json", ARTICLES)
    for lang in ("en", "de"):
        squad_file(squad.xquad_path(root, lang), ARTICLES)
    settings = [*TINY, "task.name=extractive_qa", "task.doc_stride=16", "model.max_length=48",
                "data.name=xquad", f"data.manual_dir={root}", "data.target_languages=[en, de]",
                "trainer.steps=4", "checkpoint.every=2"]
    assert main(["train", "--run-dir", str(tmp_path / "calm"), *settings]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _fail_replace_of("de.json"))
        assert main(["train", "--run-dir", str(tmp_path / "run"), *settings]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert len(errors) == 1 and errors[0].endswith("predictions/de.json: No space left on device")
    assert not list((tmp_path / "run" / "predictions").glob(".*"))  # no temporary left
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    for name in ("predictions/en.json", "predictions/de.json"):
        assert (tmp_path / "run" / name).read_text() == (tmp_path / "calm" / name).read_text()
    summaries = [json.loads((tmp_path / r / "summary.json").read_text()) for r in ("run", "calm")]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]
