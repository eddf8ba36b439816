"""SmolLM2-135M-Instruct (GGUF Q4_1 asset) against transformers loading the same file (slow)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_asset

from jaxcult import assets, load_pretrained
from jaxcult.config import GenerationConfig
from jaxcult.generation import generate

PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain.",
           "What is 12 plus 7?", "Give me a tip for learning a language."]


@pytest.mark.slow
def test_smollm2_logits_and_batched_greedy_chat_match_transformers():
    require_asset("smollm2-135m-instruct")
    asset = assets.get_asset("smollm2-135m-instruct")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = asset.path()
    model, tokenizer = load_pretrained(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    config = GenerationConfig(max_new_tokens=24, batch_size=5, length_buckets=[32, 64])
    ours = generate(model, tokenizer, PROMPTS, config, chat=True)  # one left-padded batch
    for prompt, completion in zip(PROMPTS, ours):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == hf_tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref_logits = hf(input_ids=torch.tensor([ids])).logits.numpy()
            out = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        logits = np.asarray(model(jnp.asarray([ids])).logits)
        assert np.abs(logits - ref_logits).max() <= 1e-3, prompt
        reference = out[0, len(ids):].tolist()
        assert completion.token_ids == reference, (prompt, completion.text,
                                                  tokenizer.decode(reference))
    assert ours[0].text.strip() == "The capital of France is Paris."
