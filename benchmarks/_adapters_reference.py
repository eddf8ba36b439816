"""PyTorch + AdapterHub `adapters` reference (run by benchmarks/train_step.py in its own venv).

Prints one JSON line: median seconds per AdamW step with a Pfeiffer (seq_bn, rf 16) task adapter
and classification head on XLM-R, and seconds for one FUN check done the official way
(deep copy of the model, then squared batch gradients over N batches with argmax labels).
"""

import copy
import json
import statistics
import sys
import time

import torch
from adapters import AutoAdapterModel, SeqBnConfig

model_dir, batch, length, steps, fisher_batches = sys.argv[1], *map(int, sys.argv[2:6])
torch.manual_seed(0)
model = AutoAdapterModel.from_pretrained(model_dir)
model.add_adapter("task", config=SeqBnConfig(reduction_factor=16, non_linearity="relu"))
model.add_classification_head("task", num_labels=8)
model.train_adapter("task")
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
vocab = model.config.vocab_size


def make_batch():
    ids = torch.randint(5, vocab, (batch, length))
    return ids, torch.ones_like(ids), torch.randint(0, 8, (batch,))


def step(ids, mask, labels):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()


data = [make_batch() for _ in range(4)]
step(*data[0])
times = []
for i in range(steps):
    start = time.perf_counter()
    step(*data[i % 4])
    times.append(time.perf_counter() - start)


def official_fun_check():
    clone = copy.deepcopy(model)
    clone.eval()
    traces = {}
    for i in range(fisher_batches):
        ids, mask, _ = data[i % 4]
        clone.zero_grad(set_to_none=True)
        logits = clone(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(-1))
        loss.backward()
        for name, p in clone.named_parameters():
            if p.grad is not None and "adapters" in name:
                traces[name] = traces.get(name, 0.0) + float((p.grad ** 2).sum()) / ids.shape[0]
    return traces


start = time.perf_counter()
official_fun_check()
fun_seconds = time.perf_counter() - start
print(json.dumps({"step_seconds": statistics.median(times), "fun_check_seconds": fun_seconds,
                  "threads": torch.get_num_threads()}))
