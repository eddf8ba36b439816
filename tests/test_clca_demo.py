"""The offline CLCA demo end to end through the `jaxcult` command (slow, ~10 minutes): five
per-culture adapters that `peft` loads onto transformers' SmolLM2, whose chat replies differ
from the base model's, and that jaxcult's own generation reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_asset

from jaxcult import assets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

DEMO = Path(__file__).resolve().parent.parent / "experiments" / "clca" / "demo.yaml"
CULTURES = ("uk", "china", "germany", "mexico", "japan")
CHAT = [{"role": "system", "content": "Imagine you are Aiko, a person from the Japanese culture, "
                                      "talking with your new colleague."},
        {"role": "user", "content": "Hello! Shall we have lunch together tomorrow?"}]


def greedy(model, ids) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    return out[0, len(ids):].tolist()


@pytest.mark.slow
def test_demo_adapters_load_in_peft_and_change_the_chat(tmp_path):
    from jaxcult.cli import main
    from jaxcult.config import GenerationConfig
    from jaxcult.generation.api import generate
    from jaxcult.run.generate import load_generation_model

    require_asset("smollm2-135m-instruct")
    asset = assets.get_asset("smollm2-135m-instruct")
    out = tmp_path / "demo"
    assert main(["clca", "run", str(DEMO), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["train"]) == set(CULTURES)
    adapters = {c: Path(summary["train"][c]["adapter"]) for c in CULTURES}

    path = asset.path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    base = greedy(hf, ids)
    model = peft.PeftModel.from_pretrained(hf, str(adapters["uk"]), adapter_name="uk").eval()
    for culture in CULTURES[1:]:
        model.load_adapter(str(adapters[culture]), adapter_name=culture)
    replies = {}
    for culture in CULTURES:
        model.set_adapter(culture)
        replies[culture] = greedy(model, ids)
        assert replies[culture] != base, culture
    loaded, jax_tokenizer = load_generation_model("smollm2-135m-instruct", str(adapters["japan"]),
                                                  merge=False)
    [ours] = generate(loaded, jax_tokenizer, [CHAT], GenerationConfig(max_new_tokens=24))
    n = min(12, len(ours.token_ids), len(replies["japan"]))
    assert n > 0 and ours.token_ids[:n] == replies["japan"][:n]
