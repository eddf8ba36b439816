"""Whole runs, jaxcult vs PyTorch + `adapters`: COPA -> XCOPA with Pfeiffer task adapters on
multilingual-e5-small, GU and FUN (k 50) and one standard run, 300 steps each, interleaved in one
invocation, medians of --rounds rounds (3).

    python benchmarks/run.py [--steps 300] [--k 50] [--rounds 3] [--eval-examples 100] [--official-padding]

jaxcult runs are real `jaxcult train` invocations of experiments/xcopa-e5.yaml (length buckets
fitted to COPA with length grouping over the same 50-batch windows as the PyTorch side,
truncated backward, FUN checks with the official estimator: squared batch gradients at argmax
labels over --fisher-batches, 41), each compiling its programs (the persistent compilation
cache is off, as on a first run). The PyTorch side (benchmarks/_adapters_run.py, in its own
venv) trains on the same token ids, padded per batch to its longest example with length-grouped
batches (the careful PyTorch user, the primary reference); `--official-padding` adds the FUN
paper's official pipeline (every example padded to 128) as a separate, labelled row. Wall times
are whole processes (imports, model load, training, evaluation of the same XCOPA examples);
step times by phase come from each side's own logs; each side's run with the median wall time
is reported, with the load average before and after. One extra jaxcult FUN run uses
`fisher.estimator: in_step_ema`. Needs ../shared/data (copa/, xcopa/). Read the ratios, not the
absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))
from adapters_env import adapters_python  # noqa: E402

BATCH, LR, SEED, GROUPING = 16, 5e-4, 1, 50


def overrides(args, schedule: str, estimator: str = "argmax_batch") -> list[str]:
    return [f"data.manual_dir={DATA}", f"schedule.name={schedule}", f"schedule.k={args.k}",
            "trainer.epochs=null", f"trainer.steps={args.steps}", f"trainer.batch_size={BATCH}",
            f"optimizer.lr={LR}", f"trainer.seed={SEED}", "trainer.eval_every=0",
            "trainer.log_every=10", f"data.max_eval_examples={args.eval_examples}",
            "checkpoint.every=0", "data.length_buckets=fit", f"data.length_grouping={GROUPING}",
            *([f"fisher.estimator={estimator}"] if schedule == "fun" else []),
            *([f"fisher.num_batches={args.fisher_batches}"]
              if schedule == "fun" and estimator != "in_step_ema" else [])]


def dump_inputs(args, scratch: Path) -> tuple[Path, Path, float, list[int]]:
    """The HF export of the backbone and jaxcult's token ids (train + test splits) for the
    PyTorch side; the padding jaxcult's buckets leave over the run's batches."""
    from jaxcult.config_loading import load_config
    from jaxcult.data.batching import BatchIterator
    from jaxcult.hub.export import save_pretrained
    from jaxcult.hub.pretrained import load_pretrained
    from jaxcult.run.build import build_run

    model, _ = load_pretrained("multilingual-e5-small")
    model_dir = save_pretrained(model, scratch / "e5")
    del model
    config = load_config(ROOT / "experiments" / "xcopa-e5.yaml", overrides(args, "gu"))
    data = build_run(config).data
    arrays = {f"train_{k}": v for k, v in data.train.arrays.items()
              if k in ("input_ids", "attention_mask", "labels")}
    for language, split in data.tests.items():
        arrays.update({f"test_{language}_{k}": v for k, v in split.arrays.items()
                       if k in ("input_ids", "attention_mask", "labels")})
    path = scratch / "copa.npz"
    np.savez(path, **arrays)
    iterator = BatchIterator(data.train, BATCH, seed=SEED, length_grouping=GROUPING)
    masks = [next(iterator)["attention_mask"] for _ in range(args.steps)]
    real = sum(int(m.sum()) for m in masks)
    padding = 1 - real / sum(m.size for m in masks)
    return model_dir, path, padding, sorted({m.shape[-1] for m in masks})


def jsonl(path: Path) -> list[dict]:
    """Records of a run's log (none when the run did not write it: fisher.jsonl without checks)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def jaxcult_run(args, schedule: str, scratch: Path, estimator: str = "argmax_batch") -> dict:
    run_dir = scratch / f"jaxcult-{schedule}-{estimator}-{time.monotonic_ns()}"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "jaxcult.cli", "train",
                          str(ROOT / "experiments" / "xcopa-e5.yaml"), "--run-dir", str(run_dir),
                          *overrides(args, schedule, estimator)],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "JAXCULT_COMPILATION_CACHE": "off"})
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"jaxcult {schedule} failed:\n{out.stderr[-3000:]}")
    checks = [(r["step"], r["seconds"]) for r in jsonl(run_dir / "fisher.jsonl") if "seconds" in r]
    check_at = dict(checks)
    steps, previous = [], 0
    for record in jsonl(run_dir / "metrics.jsonl"):
        if record.get("split") != "train":
            continue
        done = record["step"]
        seconds = (done - previous) / record["steps_per_second"]
        seconds -= sum(s for step, s in check_at.items() if previous <= step < done)
        phase = sum(g != "head" for g in record["trainable_groups"])
        steps.append((previous, done, phase, seconds / (done - previous)))
        previous = done
    events = jsonl(run_dir / "events.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"wall": wall, "steps": steps, "checks": [s for _, s in checks],
            "decisions": [(e["step"], e["groups"]) for e in events if e["reason"] != "initial"],
            "accuracy": summary["average_excluding_source"]}


def torch_run(args, schedule: str, model_dir: Path, data: Path, padding: str) -> dict:
    start = time.perf_counter()
    out = subprocess.run([str(adapters_python()), str(HERE / "_adapters_run.py"), str(model_dir),
                          str(data), schedule, str(args.k), str(args.steps), str(BATCH), str(LR),
                          str(args.fisher_batches), str(SEED), padding], capture_output=True,
                         text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"pytorch {schedule} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "wall": wall}


def phase_step(result: dict, phase: int, torch_side: bool) -> float | None:
    """Median seconds per step while `phase` layer groups train (the first, compiling,
    jaxcult interval excluded)."""
    if torch_side:
        times = [s for _, p, s in result["steps"] if p == phase]
    else:
        times = [s for start, _, p, s in result["steps"] if p == phase and start > 0]
    return statistics.median(times) if times else None


def ratio(theirs: float | None, ours: float | None) -> str:
    return f"{theirs / ours:.2f}x" if theirs and ours else "n/a"


def report(args, ours: dict, theirs: dict, ema: dict, padding: float, buckets: list[int],
           official: dict | None = None, load: tuple[float, float] = (float("nan"),) * 2) -> None:
    layers = 12
    print(f"COPA -> XCOPA, multilingual-e5-small, Pfeiffer rf16, batch {BATCH}, {args.steps} steps, "
          f"k {args.k}, {args.fisher_batches}-batch FUN checks; median-wall run of {args.rounds} "
          f"interleaved rounds per side; load {load[0]:.2f} before, {load[1]:.2f} after; ratios are "
          f"PyTorch time / jaxcult time")
    print(f"padding (share of computed tokens): jaxcult buckets {buckets} {100 * padding:.0f}%, "
          f"PyTorch per-batch dynamic {100 * theirs['standard']['padding_fraction']:.0f}%"
          + (f", official pad-to-128 {100 * official['standard']['padding_fraction']:.0f}%"
             if official else ""))
    for name in ("gu", "fun", "standard"):
        o, t = ours[name], theirs[name]
        print(f"whole {name:8s} run: jaxcult {o['wall']:6.1f} s, pytorch dynamic padding "
              f"{t['wall']:6.1f} s (load {t['load_seconds']:.1f}, train {t['train_seconds']:.1f}, "
              f"eval {t['eval_seconds']:.1f}), ratio {ratio(t['wall'], o['wall'])}")
        if official:
            p = official[name]
            print(f"    (unequal work: official pad-to-128 pipeline {p['wall']:6.1f} s, ratio "
                  f"{ratio(p['wall'], o['wall'])})")
    print(f"FUN / GU wall time: jaxcult {ours['fun']['wall'] / ours['gu']['wall']:.2f}, pytorch "
          f"{theirs['fun']['wall'] / theirs['gu']['wall']:.2f}")
    for label, source, phase in [("top-1", "gu", 1), ("top-3", "gu", 3), ("top-6", "gu", 6),
                                 ("all", "standard", layers)]:
        o, t = phase_step(ours[source], phase, False), phase_step(theirs[source], phase, True)
        if o and t:
            print(f"step, {label:5s} trainable (each side's own padding): jaxcult {o * 1e3:5.0f} "
                  f"ms, pytorch {t * 1e3:5.0f} ms, ratio {ratio(t, o)}")
    first = phase_step(ours["gu"], 1, False) or 0.0
    compile_estimate = ours["gu"]["steps"][0][3] * 10 - 10 * first
    print(f"jaxcult first interval excess (train-step compilation): {compile_estimate:.1f} s")
    oc, tc = ours["fun"]["checks"], [s for _, s in theirs["fun"]["checks"]]
    if oc and tc:
        later = statistics.median(oc[1:]) if len(oc) > 1 else oc[0]
        theirs_check = statistics.median(tc)
        print(f"FUN check ({args.fisher_batches} batches): jaxcult first {oc[0]:.1f} s (compiles), "
              f"then {later:.1f} s; pytorch {theirs_check:.1f} s; ratio {ratio(theirs_check, later)}")
    print("decisions (step: group):")
    print("  jaxcult fun      ", [(s, g[0]) for s, g in ours["fun"]["decisions"]])
    print("  pytorch fun      ", [(s, f"layer_{layer}") for s, layer in theirs["fun"]["decisions"]])
    print("  jaxcult gu       ", [(s, g[0]) for s, g in ours["gu"]["decisions"]])
    same = sum(a[1] == b[1] for a, b in zip(ema["decisions"], ours["fun"]["decisions"]))
    print(f"in_step_ema FUN run: {ema['wall']:.1f} s ({ema['wall'] / ours['gu']['wall']:.2f}x GU); "
          f"picks the {args.fisher_batches}-batch run's group at {same}/{len(ours['fun']['decisions'])} "
          f"checks "
          f"(same seed and data order; after a first difference the runs diverge)")
    print("  jaxcult in_step  ", [(s, g[0]) for s, g in ema["decisions"]])
    print(f"XCOPA average accuracy (non-English, {args.eval_examples} examples/language): " + ", ".join(
        f"{n} jaxcult {ours[n]['accuracy'].get('accuracy', float('nan')):.3f} / pytorch "
        f"{theirs[n]['eval_accuracy']:.3f} (all languages)" for n in ("gu", "fun", "standard")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-examples", type=int, default=100)
    parser.add_argument("--fisher-batches", type=int, default=41)
    parser.add_argument("--official-padding", action="store_true",
                        help="also run the official pipeline's pad-to-128 reference (a separate row)")
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "benchmark-run.json",
                        help="raw measurements are written here")
    parser.add_argument("--report-only", action="store_true",
                        help="print the report of earlier --results without running anything")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(args.results.read_text())
        vars(args).update(results.pop("settings"))
        report(args, **results)
        return
    if not (DATA / "copa").is_dir() or not (DATA / "xcopa").is_dir():
        sys.exit(f"benchmarks/run.py needs COPA and XCOPA under {DATA}")
    load_before = os.getloadavg()[0]
    sides = ["ours", "theirs", *(["official"] if args.official_padding else [])]
    runs: dict[str, dict[str, list]] = {side: {n: [] for n in ("gu", "fun", "standard")}
                                        for side in sides}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        model_dir, data, padding, buckets = dump_inputs(args, scratch)
        make = {"ours": lambda n: jaxcult_run(args, n, scratch),
                "theirs": lambda n: torch_run(args, n, model_dir, data, "dynamic"),
                "official": lambda n: torch_run(args, n, model_dir, data, "128")}
        for round_index in range(args.rounds):
            for name in ("gu", "fun", "standard"):
                order = sides if round_index % 2 == 0 else sides[::-1]
                for side in order:
                    runs[side][name].append(make[side](name))
        ema = jaxcult_run(args, "fun", scratch, estimator="in_step_ema")

    def median_run(results: list[dict]) -> dict:
        middle = statistics.median_low(r["wall"] for r in results)
        return next(r for r in results if r["wall"] == middle)

    results = {side: {n: median_run(r) for n, r in by_name.items()} for side, by_name in runs.items()}
    results.update(ema=ema, padding=padding, buckets=buckets,
                   load=(load_before, os.getloadavg()[0]))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("steps", "k", "eval_examples", "fisher_batches",
                                              "rounds")}
    args.results.write_text(json.dumps({**results, "settings": settings}))
    report(args, **results)


if __name__ == "__main__":
    main()
