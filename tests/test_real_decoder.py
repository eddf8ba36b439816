"""SmolLM2-135M-Instruct (GGUF Q4_1 asset) against transformers loading the same file (slow)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcult import load_pretrained
from jaxcult import assets
from jaxcult.models.generate import greedy_generate

PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain.",
           "What is 12 plus 7?", "Give me a tip for learning a language."]


def greedy_reference(hf, torch, ids, steps):
    """Greedy decoding by full forwards (no cache, no generation-config processors)."""
    tokens = list(ids)
    for _ in range(steps):
        tokens.append(int(hf(input_ids=torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(ids):]


@pytest.mark.slow
def test_smollm2_logits_and_greedy_continuations_match_transformers():
    asset = assets.get_asset("smollm2-135m-instruct")
    if not asset.installed():
        pytest.skip("asset smollm2-135m-instruct not installed")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = asset.path()
    model, tokenizer = load_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == hf_tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref_logits = hf(input_ids=torch.tensor([ids])).logits.numpy()
            ref = greedy_reference(hf, torch, ids, 20)
        logits = np.asarray(model(jnp.asarray([ids])).logits)
        assert np.abs(logits - ref_logits).max() <= 1e-3, prompt
        ours = greedy_generate(model, ids, 20)
        assert ours == ref, (prompt, tokenizer.decode(ours), tokenizer.decode(ref))
