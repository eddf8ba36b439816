"""Runs in the `adapters` environment for tests/test_adapterhub_interop.py.

    python _adapterhub_reference.py create WORKDIR   # tiny XLM-R + AdapterHub adapters + logits
    python _adapterhub_reference.py score WORKDIR    # load jaxcult's exports, write their logits
    python _adapterhub_reference.py mlm-base WORKDIR # tiny BERT (minilm-l6's vocabulary)
    python _adapterhub_reference.py mlm-score WORKDIR  # a language adapter + MLM head: logits
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from adapters import (
    BertAdapterModel,
    DoubleSeqBnConfig,
    SeqBnConfig,
    SeqBnInvConfig,
    XLMRobertaAdapterModel,
)
from adapters.composition import Stack
from transformers import BertConfig, XLMRobertaConfig

work = Path(sys.argv[2])
if sys.argv[1] in ("create", "score", "mlm-score"):
    inputs = np.load(work / ("mlm-inputs.npz" if sys.argv[1] == "mlm-score" else "inputs.npz"))
    ids, mask = torch.tensor(inputs["input_ids"]), torch.tensor(inputs["attention_mask"])


def logits(model, setup):
    model.eval()
    model.set_active_adapters(setup)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, head=setup_head(setup)).logits.numpy()


def setup_head(setup):
    return setup.last() if isinstance(setup, Stack) else setup


if sys.argv[1] == "create":
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=37,
                              max_position_embeddings=40, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    model = XLMRobertaAdapterModel(config)
    model.save_pretrained(work / "base")
    model.add_adapter("pf", config=SeqBnConfig(reduction_factor={"default": 4, "1": 8}))
    model.add_adapter("hb", config=DoubleSeqBnConfig(reduction_factor=4, non_linearity="gelu"))
    model.add_adapter("lang", config=SeqBnInvConfig(reduction_factor=2))
    for name in ("pf", "hb"):
        model.add_classification_head(name, num_labels=3)
    with torch.no_grad():  # non-zero everywhere (a fresh adapter's up-projection is ~0)
        for key, value in model.named_parameters():
            if "adapters." in key or "invertible_adapters" in key or key.startswith("heads."):
                value.add_(0.2 * torch.randn_like(value))
    out = {}
    for name in ("pf", "hb", "lang"):
        model.save_adapter(str(work / name), name, use_safetensors=True)
    out["pf"] = logits(model, "pf")
    out["hb"] = logits(model, "hb")
    out["lang+pf"] = logits(model, Stack("lang", "pf"))
    np.savez(work / "reference.npz", **out)
elif sys.argv[1] == "mlm-base":
    torch.manual_seed(0)
    BertAdapterModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=37,
                                max_position_embeddings=64)).save_pretrained(work / "bert-base")
elif sys.argv[1] == "mlm-score":
    model = BertAdapterModel.from_pretrained(work / "bert-base")
    name = model.load_adapter(str(work / "language-adapter"), with_head=True, use_safetensors=True)
    np.savez(work / "mlm-scored.npz", logits=logits(model, name))
else:
    model = XLMRobertaAdapterModel.from_pretrained(work / "base")
    out = {}
    for name in json.loads((work / "exports.json").read_text()):
        loaded = model.load_adapter(str(work / "exported" / name), use_safetensors=True)
        out[name] = logits(model, loaded)
    model.load_adapter(str(work / "exported" / "lang"), load_as="lang", with_head=False,
                       use_safetensors=True)
    out["lang+pf"] = logits(model, Stack("lang", "pf"))
    np.savez(work / "scored.npz", **out)
