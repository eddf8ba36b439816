"""PyTorch + AdapterHub `adapters` reference (run by benchmarks/train_step.py in its own venv).

    python _adapters_reference.py MODEL_DIR BATCHES.npz STEPS FISHER_BATCHES NUM_LABELS TOP_KS [DTYPE]

On the token ids and labels jaxcult's side drew (BATCHES.npz), with a Pfeiffer (seq_bn, rf 16,
relu) task adapter and a classification head, dropout on (train mode): median seconds per AdamW
step with every adapter trainable ("all") and with only the top k adapters and the head
trainable (`requires_grad`; autograd then stops below the lowest trainable adapter), for each k
of TOP_KS (comma-separated); and seconds for one FUN check done the official way (deep copy of
the model, squared batch gradients at argmax labels over FISHER_BATCHES batches). DTYPE
bfloat16 (jaxcult's `model.dtype` / `model.compute_dtype: bfloat16`) keeps the frozen model in
bfloat16 and the adapters and head in float32, and runs every forward under CPU autocast to
bfloat16 (PyTorch's mixed precision); float32 (the default) is plain float32. Prints one JSON
line.
"""

import contextlib
import copy
import json
import re
import statistics
import sys
import time

import numpy as np
import torch
from adapters import AutoAdapterModel, SeqBnConfig

model_dir, batches_path = sys.argv[1:3]
steps, fisher_batches, num_labels = map(int, sys.argv[3:6])
top_ks = [int(k) for k in sys.argv[6].split(",") if k]
low_precision = (sys.argv[7] if len(sys.argv) > 7 else "float32") == "bfloat16"
torch.manual_seed(0)
model = AutoAdapterModel.from_pretrained(model_dir)
model.add_adapter("task", config=SeqBnConfig(reduction_factor=16, non_linearity="relu"))
model.add_classification_head("task", num_labels=num_labels)
model.train_adapter("task")
model.train()
if low_precision:
    for name, p in model.named_parameters():
        if "adapters." not in name and "heads." not in name:
            p.data = p.data.to(torch.bfloat16)
compute = (torch.autocast("cpu", dtype=torch.bfloat16) if low_precision
           else contextlib.nullcontext())
layers = model.config.num_hidden_layers
arrays = np.load(batches_path)
data = [(torch.from_numpy(arrays[f"input_ids_{i}"]).long(),
         torch.from_numpy(arrays[f"attention_mask_{i}"]).long(),
         torch.from_numpy(arrays[f"labels_{i}"]).long())
        for i in range(len([k for k in arrays.files if k.startswith("input_ids_")]))]
adapter_layer = re.compile(r"\.layer\.(\d+)\..*adapters\.task\.")


def trainable_from(lowest: int) -> list[torch.nn.Parameter]:
    """Open the head and the adapters of layers >= `lowest`; freeze the other adapters."""
    chosen = []
    for name, p in model.named_parameters():
        if "adapters.task." in name:
            p.requires_grad = int(adapter_layer.search(name).group(1)) >= lowest
        elif "heads." in name:
            p.requires_grad = True
        if p.requires_grad:
            chosen.append(p)
    return chosen


def step_seconds(lowest: int) -> float:
    params = trainable_from(lowest)
    optimizer = torch.optim.AdamW(params, lr=5e-4)

    def step(ids, mask, labels):
        optimizer.zero_grad(set_to_none=True)
        with compute:
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    step(*data[0])  # warm-up
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(*data[i % len(data)])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def official_fun_check() -> dict:
    trainable_from(0)
    clone = copy.deepcopy(model)
    clone.eval()
    traces = {}
    for i in range(fisher_batches):
        ids, mask, _ = data[i % len(data)]
        clone.zero_grad(set_to_none=True)
        with compute:
            logits = clone(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1))
        loss.backward()
        for name, p in clone.named_parameters():
            if p.grad is not None and "adapters" in name:
                traces[name] = traces.get(name, 0.0) + float((p.grad ** 2).sum()) / ids.shape[0]
    return traces


result = {"step_seconds": {"all": step_seconds(0)}}
for k in top_ks:
    result["step_seconds"][f"top-{k}"] = step_seconds(layers - k)
start = time.perf_counter()
official_fun_check()
result["fun_check_seconds"] = time.perf_counter() - start
result["threads"] = torch.get_num_threads()
print(json.dumps(result))
