"""Write the "FUN with Fisher" reproduction configs under experiments/fun/ from the paper's tables.

    python scripts/make_fun_configs.py

Families (docs/reproducing-fun.md):
- `<task>-<model>-<schedule>.yaml`: Table 1 / Table 3 (MAD-X task adapters), Algorithm 1's
  timing and the paper's Fisher estimator (Eq. 1);
- `<task>-<model>-<schedule>-official.yaml`: the same runs with every switch of the official
  code (its timing, argmax Fisher over one pass, HF AdamW, transformers' heads, its COPA input,
  partial batches, its QA scoring);
- `lora-<task>-<model>-<schedule>.yaml`: Table 14 / Table 15 (LoRA r 8, alpha 8 on q and v);
- `lowdata-<task>-<model>-<size>-<schedule>.yaml`: Tables 11 / 13 and Table 4 / App. G.3
  (1k, 5k, 10k subsampled English training examples).
Shared files (`base.yaml`, `model-*.yaml`, `madx-*.yaml`, `task-*.yaml`, `official*.yaml`,
`lora.yaml`) are written by hand; this script writes only the leaves.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "experiments" / "fun"
TASKS = ("xnli", "xcopa", "xquad", "mlqa")
MODELS = ("mbert", "xlmr")
SCHEDULES = ("standard", "gu", "lpft", "fun", "random")

# Table 3: per task and model: epochs (standard / scheduled), lr (standard / scheduled),
# and k for LPFT, GU, FUN (random uses GU's).
MAIN = {
    ("xquad", "mbert"): ((5, 5), (5e-4, 5e-4), {"lpft": 800, "gu": 800, "fun": 800}),
    ("xquad", "xlmr"): ((15, 15), (2e-4, 5e-4), {"lpft": 800, "gu": 800, "fun": 100}),
    ("xcopa", "mbert"): ((500, 5000), (1e-4, 1e-5), {"lpft": 800, "gu": 50, "fun": 50}),
    ("xcopa", "xlmr"): ((500, 5000), (1e-4, 1e-5), {"lpft": 800, "gu": 1000, "fun": 1000}),
    ("xnli", "mbert"): ((15, 15), (5e-4, 5e-4), {"lpft": 25, "gu": 800, "fun": 50}),
    ("xnli", "xlmr"): ((15, 15), (5e-4, 5e-4), {"lpft": 800, "gu": 800, "fun": 800}),
}
MAIN[("mlqa", "mbert")], MAIN[("mlqa", "xlmr")] = MAIN[("xquad", "mbert")], MAIN[("xquad", "xlmr")]
# Table 15 (LoRA): epochs, lr (standard / scheduled), k for GU and FUN.
LORA = {
    ("xquad", "mbert"): ((5, 5), (5e-4, 8e-4), {"gu": 800, "fun": 800}),
    ("xquad", "xlmr"): ((15, 15), (5e-4, 5e-4), {"gu": 800, "fun": 800}),
    ("xcopa", "mbert"): ((500, 5000), (1e-4, 1e-4), {"gu": 50, "fun": 100}),
    ("xcopa", "xlmr"): ((500, 5000), (1e-4, 1e-4), {"gu": 100, "fun": 200}),
    ("xnli", "mbert"): ((15, 15), (5e-4, 5e-4), {"gu": 50, "fun": 50}),
    ("xnli", "xlmr"): ((15, 15), (5e-4, 5e-4), {"gu": 800, "fun": 800}),
}
LORA[("mlqa", "mbert")], LORA[("mlqa", "xlmr")] = LORA[("xquad", "mbert")], LORA[("xquad", "xlmr")]
# Table 4 (GU) and App. G.3 (FUN): epochs, k per training-set size 1k / 5k / 10k; lr 5e-4.
LOW = {
    ("xquad", "mbert"): (20, {"gu": (10, 50, 50), "fun": (10, 50, 50)}),
    ("xquad", "xlmr"): (20, {"gu": (10, 50, 50), "fun": (10, 50, 25)}),
    ("xnli", "mbert"): (50, {"gu": (1, 25, 25), "fun": (10, 50, 25)}),
    ("xnli", "xlmr"): (50, {"gu": (1, 25, 10), "fun": (1, 25, 10)}),
}
SIZES = (1000, 5000, 10000)


def leaf(path: Path, comment: str, name: str, bases: list[str], body: list[str]) -> None:
    text = [f"# {comment} (docs/reproducing-fun.md; written by scripts/make_fun_configs.py).",
            f"name: {name}", f"base: [{', '.join(bases)}]", *body]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def training(schedule: str, k: int | None, epochs: int, lr: float, default_lr: float | None,
             extra: list[str] = ()) -> list[str]:
    body = ["schedule:", f"  name: {schedule}"] + ([f"  k: {k}"] if k is not None else [])
    body += [*extra]
    if lr != default_lr:
        body += ["optimizer:", f"  lr: {lr:.1e}".replace("e-0", "e-")]
    return body + ["trainer:", f"  epochs: {epochs}"]


def main_family() -> None:
    for task in TASKS:
        default_lr = 5e-4 if task != "xcopa" else None
        for model in MODELS:
            (epochs, lrs, ks) = MAIN[task, model]
            for schedule in SCHEDULES:
                scheduled = schedule != "standard"
                k = ks.get(schedule, ks["gu"]) if scheduled else None
                stem = f"{task}-{model}-{schedule}"
                body = training(schedule, k, epochs[scheduled], lrs[scheduled], default_lr)
                bases = ["base.yaml", f"model-{model}.yaml", f"madx-{model}.yaml", f"task-{task}.yaml"]
                leaf(OUT / f"{stem}.yaml", f"FUN reproduction: {task} x {model} x {schedule}",
                     f"fun-{stem}", bases, body)
                official = ["schedule:", "  official_offset: true"] if scheduled else []
                if schedule == "fun":
                    official += ["fisher:", "  estimator: argmax_batch", "  one_pass: true"]
                leaf(OUT / f"{stem}-official.yaml",
                     f"FUN reproduction with the official code's switches: {task} x {model} x "
                     f"{schedule}", f"fun-{stem}-official",
                     [f"{stem}.yaml", "official.yaml", f"official-{task}.yaml"], official)


def lora_family() -> None:
    for task in TASKS:
        default_lr = 5e-4 if task != "xcopa" else None
        for model in MODELS:
            (epochs, lrs, ks) = LORA[task, model]
            for schedule in ("standard", "gu", "fun"):
                scheduled = schedule != "standard"
                stem = f"lora-{task}-{model}-{schedule}"
                body = training(schedule, ks.get(schedule), epochs[scheduled], lrs[scheduled],
                                default_lr)
                leaf(OUT / f"{stem}.yaml", f"FUN reproduction, LoRA (Tables 14, 15): {task} x "
                     f"{model} x {schedule}", f"fun-{stem}",
                     ["base.yaml", f"model-{model}.yaml", f"task-{task}.yaml", "lora.yaml"], body)


def low_data_family() -> None:
    for (task, model), (epochs, ks) in LOW.items():
        for index, size in enumerate(SIZES):
            for schedule in ("standard", "gu", "fun"):
                stem = f"lowdata-{task}-{model}-{size // 1000}k-{schedule}"
                k = ks[schedule][index] if schedule != "standard" else None
                body = training(schedule, k, epochs, 5e-4, 5e-4)
                body += ["data:", f"  max_train_examples: {size}", "  subsample: random"]
                leaf(OUT / f"{stem}.yaml", f"FUN reproduction, low data (Tables 4, 11, 13): "
                     f"{task} x {model} x {size} examples x {schedule}", f"fun-{stem}",
                     ["base.yaml", f"model-{model}.yaml", f"madx-{model}.yaml",
                      f"task-{task}.yaml"], body)


if __name__ == "__main__":
    main_family()
    lora_family()
    low_data_family()
    print(f"written: {len(list(OUT.glob('*.yaml')))} files in {OUT}")
