"""Bounded memory (slow): a 2-million-example classification dataset, prepared as array_record,
trains 100 steps through `data.source: tfds` with peak RSS under 1.5x that of the same run on
2,000 examples (the in-memory path would hold every record and its tokens)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_minilm

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow_datasets")

WORDS = "river mountain city train music paint doctor market garden winter bridge story".split()
# VmHWM, not getrusage's ru_maxrss: a child inherits its parent's maximum RSS across fork and
# exec, so ru_maxrss would report this test process's peak (it held 2M records preparing them)
MEASURE = ("import sys; from jaxcult.cli import main; code = main(sys.argv[1:]); "
           "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
           "print('MAXRSS_KB', peak.split()[1]); sys.exit(code)")


def synthetic_pairs(root: Path, count: int) -> Path:
    """PAWS-X-layout TSV files: `count` English training pairs and a small dev split."""
    folder = root / "pawsx"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    with open(folder / "train-en.tsv", "w", encoding="utf-8") as handle:
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14)))
            handle.write(f"{text} {i}\t{text} number {i}\t{i % 2}\n")
    (folder / "dev-en.tsv").write_text("".join(f"dev {i} river\tdev {i} city\t{i % 2}\n"
                                               for i in range(64)))
    return root


def peak_rss_kb(data_dir: Path, run_dir: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, "train", "--run-dir", str(run_dir), "model.name=random",
         "model.tokenizer=minilm-l6", "model.max_length=32",
         "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, "
         "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 37}",
         "data.name=pawsx", "task.name=pair_classification", "data.source=tfds",
         f"data.data_dir={data_dir}", "data.eval_split=validation", "data.target_languages=[en]",
         "trainer.steps=100", "trainer.batch_size=32", "trainer.eval_every=0",
         "schedule.name=standard", "logging.tensorboard=false", "logging.progress=off",
         "checkpoint.every=0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(re.search(r"MAXRSS_KB (\d+)", result.stdout).group(1))


@needs_minilm
def test_two_million_examples_train_in_bounded_memory(tmp_path):
    from jaxcult.data import tfds as jt

    peaks = {}
    for count in (2_000, 2_000_000):
        source = synthetic_pairs(tmp_path / f"src-{count}", count)
        jt.prepare("jaxcult:pawsx", data_dir=tmp_path / f"tfds-{count}", manual_dir=source)
        peaks[count] = peak_rss_kb(tmp_path / f"tfds-{count}", tmp_path / f"run-{count}")
    print(f"peak RSS: 2,000 examples {peaks[2_000] / 1024:.0f} MiB, 2,000,000 examples "
          f"{peaks[2_000_000] / 1024:.0f} MiB ({peaks[2_000_000] / peaks[2_000]:.2f}x)")
    assert peaks[2_000_000] < 1.5 * peaks[2_000]
