"""A whole COPA run in PyTorch + `adapters` (run by benchmarks/run.py in its own venv, on the
token ids jaxcult produced), padded either as the FUN paper's official pipeline does (PADDING
`128`: every example to 128 tokens) or as a careful PyTorch user would (`dynamic`: each batch to
its longest example, batches drawn from length-sorted groups of 50 batches, as transformers'
`group_by_length` does; evaluation batches trimmed the same way).

Its behaviour, not its code: Pfeiffer task adapters (rf 16,
relu) and a multiple-choice head; schedules by `requires_grad` toggling (autograd then stops below
the lowest trainable adapter); each FUN check deep-copies the model, opens every task adapter and
sums squared gradients of the batch NLL at argmax labels over 41 training batches, then opens the
frozen layer with the largest trace. Prints one JSON line of timings and decisions.

    python _adapters_run.py MODEL_DIR DATA.npz SCHEDULE K STEPS BATCH LR FISHER_BATCHES SEED PADDING
"""

import copy
import json
import re
import sys
import time

import numpy as np
import torch
from adapters import AutoAdapterModel, SeqBnConfig

PAD_TO = 128
started = time.perf_counter()
model_dir, data_path, schedule = sys.argv[1:4]
k, steps, batch = map(int, sys.argv[4:7])
lr = float(sys.argv[7])
fisher_batches, seed = map(int, sys.argv[8:10])
dynamic = sys.argv[10] == "dynamic"
GROUPED_BATCHES = 50   # transformers' LengthGroupedSampler: megabatches of 50 batches
torch.manual_seed(seed)
data = np.load(data_path)


def padded(name: str) -> torch.Tensor:
    array = data[name]
    out = np.zeros((*array.shape[:-1], PAD_TO), array.dtype)
    out[..., :array.shape[-1]] = array
    return torch.from_numpy(out).long()


train = {"input_ids": padded("train_input_ids"), "attention_mask": padded("train_attention_mask")}
labels = torch.from_numpy(data["train_labels"]).long()
rows = len(labels)
lengths = train["attention_mask"].reshape(rows, -1, PAD_TO).sum(-1).amax(-1)
computed_tokens = real_tokens = 0


def trimmed(inputs: dict) -> dict:
    """`dynamic`: the batch cut to its longest example (the last axis)."""
    if not dynamic:
        return inputs
    longest = int(inputs["attention_mask"].sum(-1).max())
    return {k: v[..., :longest] for k, v in inputs.items()}

model = AutoAdapterModel.from_pretrained(model_dir)
model.add_adapter("task", config=SeqBnConfig(reduction_factor=16, non_linearity="relu"))
model.add_multiple_choice_head("task", num_choices=2)
model.train_adapter("task")
trainable = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(trainable, lr=lr)
layers = model.config.num_hidden_layers
LAYER = re.compile(r"\.layer\.(\d+)\..*adapters\.task\.")


def layer_of(name: str) -> int | None:
    found = LAYER.search(name)
    return int(found.group(1)) if found else None


def set_open(model, open_layers: set[int]) -> None:
    for name, p in model.named_parameters():
        if (layer := layer_of(name)) is not None:
            p.requires_grad = layer in open_layers


open_layers = set(range(layers)) if schedule == "standard" else {layers - 1}
set_open(model, open_layers)
generator = torch.Generator().manual_seed(seed)


def batches():
    while True:
        order = torch.randperm(rows, generator=generator)
        if dynamic:   # longest first within each group of 50 batches
            group = GROUPED_BATCHES * batch
            order = torch.cat([chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
                               for chunk in order.split(group)])
        for start in range(0, rows - batch + 1, batch):
            index = order[start:start + batch]
            yield trimmed({k: v[index] for k, v in train.items()}), labels[index]


def official_fun_check() -> dict[int, float]:
    clone = copy.deepcopy(model)
    for name, p in clone.named_parameters():
        if layer_of(name) is not None:
            p.requires_grad = True
    clone.eval()
    traces: dict[int, float] = {}
    for i, (inputs, _) in enumerate(batches()):
        clone.zero_grad()
        logits = clone(**inputs).logits
        loss = torch.nn.functional.nll_loss(torch.log_softmax(logits, 1), logits.argmax(1))
        loss.backward()
        for name, p in clone.named_parameters():
            if p.grad is not None and (layer := layer_of(name)) is not None:
                traces[layer] = traces.get(layer, 0.0) + float((p.grad ** 2).sum()) / batch
        if i + 1 >= fisher_batches:
            break
    return traces


loaded = time.perf_counter()
model.train()
step_times, checks, decisions = [], [], []
stream = batches()
for step in range(steps):
    frozen = sorted(set(range(layers)) - open_layers)
    if step > 0 and step % k == 0 and frozen and schedule in ("gu", "fun"):
        start = time.perf_counter()
        if schedule == "gu":
            chosen = frozen[-1]
        else:
            traces = official_fun_check()
            chosen = max(frozen, key=lambda layer: traces[layer])
            checks.append([step, time.perf_counter() - start])
        open_layers.add(chosen)
        set_open(model, open_layers)
        decisions.append([step, chosen])
    inputs, target = next(stream)
    computed_tokens += inputs["attention_mask"].numel()
    real_tokens += int(inputs["attention_mask"].sum())
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(**inputs).logits, target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    step_times.append([step, len(open_layers), time.perf_counter() - start])
trained = time.perf_counter()

model.eval()
correct = total = 0
with torch.no_grad():
    for language in [n[len("test_"):-len("_labels")] for n in data.files
                     if n.startswith("test_") and n.endswith("_labels")]:
        ids, mask = padded(f"test_{language}_input_ids"), padded(f"test_{language}_attention_mask")
        gold = torch.from_numpy(data[f"test_{language}_labels"]).long()
        for start in range(0, len(gold), 64):
            inputs = trimmed({"input_ids": ids[start:start + 64],
                              "attention_mask": mask[start:start + 64]})
            logits = model(**inputs).logits
            correct += int((logits.argmax(1) == gold[start:start + 64]).sum())
            total += len(gold[start:start + 64])
print(json.dumps({
    "load_seconds": loaded - started, "train_seconds": trained - loaded,
    "eval_seconds": time.perf_counter() - trained, "steps": step_times, "checks": checks,
    "decisions": decisions, "padding_fraction": 1 - real_tokens / max(computed_tokens, 1),
    "eval_accuracy": correct / max(total, 1),
    "threads": torch.get_num_threads()}))
