"""Hostile inputs: every refusal exits 2 with one clear line and leaves existing outputs intact.

Each case runs `jaxcult` in-process inside a folder that already holds a finished-looking run
(`guard/`), a config, and weight files; the test snapshots every file before and after.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_minilm, tiny_model_yaml

from jaxcult.cli import main

pytestmark = needs_minilm

TINY = "name: tiny\n" + tiny_model_yaml() + """\
data: {max_train_examples: 64, max_eval_examples: 16, target_languages: [en, de]}
trainer: {batch_size: 8, eval_batch_size: 16, steps: 2}
schedule: {name: gu, k: 1}
logging: {tensorboard: false, progress: "off"}
"""


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    guard = tmp_path / "guard"
    (guard / "checkpoints" / "5").mkdir(parents=True)
    (guard / "checkpoints" / "5" / "state").write_bytes(b"precious")
    (guard / "config.yaml").write_text(TINY)
    (guard / "summary.json").write_text('{"done": true}')
    (guard / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n')
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "notes.txt").write_text("not a model")
    return tmp_path


def make_hf_dir(root: Path, name: str, config: str, tensors: dict | None = None,
                raw: bytes | None = None) -> Path:
    from safetensors.numpy import save_file

    path = root / name
    path.mkdir()
    (path / "config.json").write_text(config)
    if tensors is not None:
        save_file(tensors, str(path / "model.safetensors"))
    if raw is not None:
        (path / "model.safetensors").write_bytes(raw)
    return path


BERT = ('{"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1, '
        '"num_attention_heads": 2, "intermediate_size": 37}')


def case_files(root: Path) -> dict[str, list[str]]:
    """Cases needing files: name -> argv."""
    bad_yaml = root / "bad.yaml"
    bad_yaml.write_text("trainer:\n  steps: [1\n")
    list_yaml = root / "list.yaml"
    list_yaml.write_text("- a\n- b\n")
    cycle_a, cycle_b = root / "a.yaml", root / "b.yaml"
    cycle_a.write_text("base: b.yaml\n")
    cycle_b.write_text("base: a.yaml\n")
    binary = root / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    unknown_type = make_hf_dir(root, "t5", '{"model_type": "t5"}', {"x": np.zeros(2, np.float32)})
    bad_json = make_hf_dir(root, "badjson", "{not json", {"x": np.zeros(2, np.float32)})
    truncated = make_hf_dir(root, "trunc", BERT, raw=b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    missing = make_hf_dir(root, "missing", BERT, {"embeddings.word_embeddings.weight":
                                                  np.zeros((30522, 32), np.float32)})
    no_weights = make_hf_dir(root, "noweights", BERT)
    bad_gguf = root / "broken.gguf"
    bad_gguf.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    bad_e5 = root / "broken.bin"
    bad_e5.write_bytes(b"NOPE" + bytes(64))
    no_ckpt = root / "nockpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.yaml").write_text(TINY)
    untyped = root / "untyped.yaml"
    untyped.write_text("model:\n  name: random\n  overrides: {vocab_size: 10}\n")
    a_file = root / "afile"
    a_file.write_text("x")
    duplicate = root / "dup.yaml"
    duplicate.write_text(TINY + "trainer: {steps: 3}\n")
    mean_run = root / "meanrun"
    mean_run.mkdir()
    (mean_run / "config.yaml").write_text(TINY + "task: {pooling: mean}\n")
    t = ["train", "tiny.yaml"]
    return {
        "yaml syntax": ["train", str(bad_yaml)],
        "yaml not a mapping": ["train", str(list_yaml)],
        "base cycle": ["train", str(cycle_a)],
        "undecodable config": ["train", str(binary)],
        "missing config": ["train", "nowhere.yaml"],
        "unknown section": [*t, "optimiser.lr=1"],
        "unknown nested key": [*t, "trainer.stepz=1"],
        "wrong type": [*t, "optimizer.lr=abc"],
        "out of range": [*t, "trainer.batch_size=0"],
        "bad choice": [*t, "fisher.estimator=magic"],
        "cross-field": [*t, "trainer.steps=1", "trainer.epochs=1"],
        "override without =": [*t, "optimizer.lr"],
        "empty override key": [*t, "optimizer..lr=1"],
        "resume with config": ["train", "tiny.yaml", "--resume", "guard"],
        "resume non-run dir": ["train", "--resume", str(root / "weights")],
        "resume without checkpoints": ["train", "--resume", str(no_ckpt)],
        "run dir with outputs": [*t, "--run-dir", "guard"],
        "run dir is a file": [*t, "--run-dir", str(a_file)],
        "unknown schedule": [*t, "schedule.name=nope"],
        "schedule import fails": [*t, "schedule.name=not_a_module_xyz:Cls"],
        "fixed order invalid": [*t, "schedule.name=fixed", "schedule.order=[0,0]"],
        "zero-width bottleneck": [*t, "peft.reduction_factor=64"],
        "unknown non_linearity": [*t, "peft.non_linearity=softsign"],
        "lora target matches nothing": [*t, "peft.kind=lora", "peft.target_modules=[nothing]"],
        "modules_to_save matches nothing": [*t, "peft.kind=lora", "peft.modules_to_save=[nope]"],
        "language adapter dir missing": [*t, f"peft.language_adapters={{en: {root / 'nope'}}}"],
        "causal_lm on an encoder": [*t, "task.name=causal_lm"],
        "unknown language": [*t, "data.target_languages=[xx]"],
        "unknown dataset": [*t, "data.name=nope"],
        "fewer examples than a batch": [*t, "data.max_train_examples=4"],
        "unknown model": [*t, "model.name=no-such-model"],
        "tokenizer larger than vocabulary": [*t, "model.overrides={vocab_size: 10}"],
        "random model without type": ["train", str(untyped)],
        "unknown model_type": [*t, f"model.name={unknown_type}"],
        "config.json not JSON": [*t, f"model.name={bad_json}"],
        "truncated safetensors": [*t, f"model.name={truncated}"],
        "missing tensors": [*t, f"model.name={missing}", "model.tokenizer=minilm-l6"],
        "no weight file": [*t, f"model.name={no_weights}"],
        "broken gguf": [*t, f"model.name={bad_gguf}"],
        "broken e5s1": [*t, f"model.name={bad_e5}"],
        "directory without model": [*t, f"model.name={root / 'weights'}"],
        "unknown asset path": ["assets", "path", "nope"],
        "convert unknown model": ["convert", str(unknown_type), "--out", str(root / "conv")],
        "plot unfinished run": ["plot", str(root / "weights")],
        "eval unfinished run": ["eval", str(no_ckpt)],
        "duplicate yaml key": ["train", str(duplicate)],
        "setting without effect": [*t, "peft.lora_r=4"],
        "data_dir with files": [*t, "data.source=files", "data.data_dir=/tmp"],
        "source tfds without a prepared form": [*t, "data.source=tfds"],
        "stream a dataset that is not JSONL": [*t, "data.source=stream"],
        "inspect an unprepared dataset": ["data", "inspect", "jaxcult:xnli", "--data-dir",
                                          str(root / "no-tfds")],
        "prepare an unknown dataset": ["data", "prepare", "jaxcult:nope"],
        "inspect with a negative count": ["data", "inspect", "jaxcult:xcopa", "--examples", "-1"],
        "train_file missing (built-in data)": [*t, "data.train_file=/does/not/exist.tsv"],
        "leave_out beyond the layers": [*t, "peft.leave_out=[99]"],
        "max_length beyond positions": [*t, "model.max_length=4096"],
        "read-only run directory": [*t, "--run-dir", "/sys/kernel"],
        "run directory in a read-only folder": [*t, "--run-dir", "/sys/jaxcult-run"],
        "export --out is a file": ["export", "guard", "--format", "peft", "--out", str(a_file)],
        "convert --out is a file": ["convert", "minilm-l6", "--out", str(a_file)],
        "export mean-pooled head to adapterhub": ["export", str(mean_run), "--format", "adapterhub",
                                                  "--out", str(root / "hub")],
        "export --no-head with peft": ["export", "guard", "--format", "peft", "--no-head",
                                       "--out", str(root / "peftout")],
    }


def test_hostile_inputs(workdir, capsys):
    cases = case_files(workdir)
    assert len(cases) >= 25
    failures = []
    for name, argv in cases.items():
        before = snapshot(workdir)
        code = main(list(argv))
        err = capsys.readouterr().err.strip().splitlines()
        after = snapshot(workdir)
        changed = [p for p, h in before.items() if after.get(p) != h]
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        notices = [line for line in err if line.startswith("run directory: ")]  # train's first line
        errors = [line for line in err if line not in notices]
        if len(errors) != 1 or not errors[0].startswith("error: ") or err[-1] != errors[0]:
            problems.append(f"stderr {err[-3:]}")
        if changed:
            problems.append(f"changed {changed}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


def test_nonfinite_stop_keeps_last_checkpoint(workdir, capsys):
    code = main(["train", "tiny.yaml", "--run-dir", "nan", "trainer.steps=6", "checkpoint.every=2",
                 "trainer.inject_nonfinite_at=5", "checkpoint.async_save=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "step 5" in err[-1] and "last checkpoint (step 4)" in err[-1]
    steps = sorted(p.name for p in (workdir / "nan" / "checkpoints").iterdir())
    assert steps == ["2", "4"]
    assert not (workdir / "nan" / "summary.json").exists()
