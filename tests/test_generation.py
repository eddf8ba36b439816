"""The generation engine: greedy parity with transformers, sampling, stopping, static shapes,
files, continuation scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_minilm, xla_flags

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation import Generator, engine, generate_ids, score
from jaxcult.generation.sampling import Sampling, choose, process, top_p_filter

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EOS, PAD = 3, 0


class IdTokenizer:
    """The little a generator needs of a tokenizer, for tests on token ids."""

    eos_token_id, pad_token_id = EOS, PAD

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids if not (skip_special_tokens and i in (EOS, PAD)))


def tiny_hf(kind: str):
    torch.manual_seed({"llama": 0, "qwen2": 1, "mistral": 2}[kind])
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=False)
    config = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
              "mistral": transformers.MistralConfig}[kind](**common)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def jaxcult_copy(hf, tmp_path):
    from jaxcult.hub.pretrained import load_model

    hf.save_pretrained(tmp_path / "hf")
    return load_model(tmp_path / "hf")


PROMPTS = [[5, 17, 42, 8, 9, 60], [11, 12], [70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80], [23]]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_greedy_batches_of_mixed_lengths_equal_transformers(tmp_path, kind):
    hf = tiny_hf(kind)
    model = jaxcult_copy(hf, tmp_path)
    config = GenerationConfig(max_new_tokens=10, batch_size=4, length_buckets=[8, 16], chunk=3)
    ours = Generator(model, IdTokenizer(), config).run_batch(PROMPTS)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=10, do_sample=False,
                          eos_token_id=EOS, pad_token_id=PAD)
    for row, completion in enumerate(ours):
        reference = out[row, width:].tolist()
        assert completion.token_ids == reference[:len(completion.token_ids)], row
        assert all(t == PAD for t in reference[len(completion.token_ids):]), row
        assert completion.finish_reason == ("eos" if EOS in reference else "length")


def test_prompts_beyond_the_largest_bucket_get_an_error_and_the_rest_runs(tmp_path):
    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    config = GenerationConfig(max_new_tokens=4, batch_size=2, length_buckets=[4, 8])
    results = generate_ids(Generator(model, IdTokenizer(), config), [[5, 6], list(range(5, 15)), []])
    assert results[0].error is None and len(results[0].token_ids) >= 1
    assert results[1].finish_reason == "error"
    assert "10 tokens, more than the largest length bucket (8)" in results[1].error
    assert results[2].error == "empty prompt (no tokens)"


def test_compilations_are_bounded_by_the_buckets(tmp_path):
    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    engine._prefill.clear_cache()
    engine._decode_chunk.clear_cache()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, 90, size=int(rng.integers(1, 33))).tolist() for _ in range(100)]
    config = GenerationConfig(max_new_tokens=3, batch_size=8, length_buckets=[8, 16, 32])
    results = generate_ids(Generator(model, IdTokenizer(), config), prompts)
    assert all(r.error is None for r in results)
    assert engine._prefill._cache_size() <= 3 and engine._decode_chunk._cache_size() <= 3


def test_sampling_is_seeded_and_top_k_1_is_greedy(tmp_path):
    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    tokenizer = IdTokenizer()

    def run(**kw):
        config = GenerationConfig(max_new_tokens=8, batch_size=4, length_buckets=[16], **kw)
        return [r.token_ids for r in Generator(model, tokenizer, config).run_batch(PROMPTS)]

    sampled = run(do_sample=True, temperature=1.5, seed=3)
    assert sampled == run(do_sample=True, temperature=1.5, seed=3)
    assert sampled != run(do_sample=True, temperature=1.5, seed=4)
    assert run(do_sample=True, top_k=1, temperature=0.7, seed=9) == run()


def test_top_p_never_draws_outside_the_nucleus_and_temperature_reshapes():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, 12)) * 2, jnp.float32)
    probs = np.asarray(jax.nn.softmax(logits[0]))
    order = np.argsort(-probs)
    nucleus = set(order[:int(np.searchsorted(np.cumsum(probs[order]), 0.8)) + 1].tolist())
    keys = jax.random.split(jax.random.key(0), 2000)
    seen = jnp.zeros((1, 12), bool)
    draw = jax.jit(jax.vmap(lambda k, s: choose(logits, seen, s, k)[0], in_axes=(0, None)),
                   static_argnums=1)
    drawn = np.asarray(draw(keys, Sampling(do_sample=True, top_p=0.8)))
    assert set(drawn.tolist()) <= nucleus and len(set(drawn.tolist())) == len(nucleus)
    for temperature in (0.5, 2.0):
        drawn = np.asarray(draw(keys, Sampling(do_sample=True, temperature=temperature)))
        expected = np.asarray(jax.nn.softmax(logits[0] / temperature))
        observed = np.bincount(drawn, minlength=12) / len(drawn)
        assert np.all(np.abs(observed - expected) <= 4 * np.sqrt(expected * (1 - expected) / 2000)
                      + 1e-3)


def test_processors_match_transformers():
    from transformers.generation import logits_process as lp

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 40)).astype(np.float32) * 3
    history = torch.tensor(rng.integers(0, 40, size=(3, 6)))
    seen = np.zeros((3, 40), bool)
    seen[np.arange(3)[:, None], history.numpy()] = True
    reference = torch.tensor(logits)
    for processor in (lp.RepetitionPenaltyLogitsProcessor(1.3), lp.TemperatureLogitsWarper(0.7),
                      lp.TopKLogitsWarper(9), lp.TopPLogitsWarper(0.85), lp.MinPLogitsWarper(0.05)):
        reference = processor(history, reference)
    ours = process(jnp.asarray(logits), jnp.asarray(seen),
                   Sampling(True, 0.7, 9, 0.85, 0.05, 1.3))
    np.testing.assert_allclose(np.asarray(ours), reference.numpy(), rtol=1e-5)


def test_sort_free_top_p_keeps_the_same_nucleus_as_transformers():
    """The bisection nucleus equals transformers' sorted cumulative sum, over many shapes of
    distribution and values of p (a real vocabulary's size)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    rng = np.random.default_rng(7)
    for _ in range(40):
        logits = (rng.normal(size=(4, 4096)) * rng.uniform(0.3, 8)).astype(np.float32)
        p = float(rng.uniform(0.05, 0.99))
        ours = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), p)))
        reference = np.isfinite(TopPLogitsWarper(p)(None, torch.tensor(logits)).numpy())
        np.testing.assert_array_equal(ours, reference)


@needs_minilm
def test_stop_strings_spanning_tokens_stop_and_are_trimmed(tmp_path):
    from jaxcult import assets
    from jaxcult.hub.pretrained import load_tokenizer

    tokenizer = load_tokenizer(assets.get_asset("minilm-l6").path())
    torch.manual_seed(5)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2)).eval()
    model = jaxcult_copy(hf, tmp_path)
    prompt = [tokenizer("the weather today")["input_ids"]]
    config = GenerationConfig(max_new_tokens=12, batch_size=1, length_buckets=[8], chunk=4)
    free = Generator(model, tokenizer, config).run_batch(prompt)[0]
    words = tokenizer.decode(free.token_ids[3:6], skip_special_tokens=True)
    assert len(tokenizer(words, add_special_tokens=False)["input_ids"]) >= 2
    stopped = Generator(model, tokenizer, config.model_copy(update={"stop_strings": [words]})
                        ).run_batch(prompt)[0]
    assert stopped.finish_reason == "stop_string" and words not in stopped.text
    assert free.text.startswith(stopped.text) and free.text[len(stopped.text):].startswith(words)
    assert len(stopped.token_ids) <= 6 and stopped.token_ids == free.token_ids[:len(stopped.token_ids)]


def test_continuation_scores_equal_transformers(tmp_path):
    """Sum of the continuation's token log-probabilities, as a direct transformers forward."""
    hf = tiny_hf("llama")
    model = jaxcult_copy(hf, tmp_path)

    class Words(IdTokenizer):  # "tN tM" <-> ids, so text pairs can be scored
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [int(w[1:]) for w in text.split()]}

    prompts, endings = ["t5 t6 t7", "t9", "t20 t21"], [" t8", " t10 t11", " t1"]
    scores = score(model, Words(), prompts, endings, GenerationConfig(batch_size=2,
                                                                       length_buckets=[4, 8]))
    for (prompt, ending), result in zip(zip(prompts, endings), scores):
        ids = [int(w[1:]) for w in (prompt + ending).split()]
        n = len(ending.split())
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0], -1)
        expected = sum(float(logp[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))
        assert result.tokens == n and abs(result.logprob - expected) <= 1e-4


def test_lora_and_adapters_generate_and_merged_lora_matches(tmp_path):
    from jaxcult.config import PeftConfig
    from jaxcult.peft import lora
    from jaxcult.peft.bottleneck import add_bottleneck_adapters

    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    lora.add_lora(model, ["q", "v"], 4, 8.0, seed=1)
    for _, dense in lora.lora_modules(model):  # non-zero B: LoRA changes the outputs
        dense.lora_b[...] = jnp.full(dense.lora_b.shape, 0.3)
    config = GenerationConfig(max_new_tokens=6, batch_size=4, length_buckets=[16])
    unmerged = [r.token_ids for r in Generator(model, IdTokenizer(), config).run_batch(PROMPTS)]
    lora.merge(model)
    assert unmerged == [r.token_ids for r in Generator(model, IdTokenizer(), config).run_batch(PROMPTS)]
    adapted = jaxcult_copy(tiny_hf("llama"), tmp_path)
    add_bottleneck_adapters(adapted, PeftConfig(kind="houlsby", reduction_factor=4))
    assert all(r.error is None for r in Generator(adapted, IdTokenizer(), config).run_batch(PROMPTS))


def test_mesh_sharded_generation_equals_one_device(tmp_path):
    script = textwrap.dedent(f"""
        import jax, json
        from jaxcult.config import GenerationConfig, MeshConfig
        from jaxcult.generation import Generator
        from jaxcult.hub.pretrained import load_model
        from jaxcult.sharding import make_mesh
        import test_generation as t
        model = t.jaxcult_copy(t.tiny_hf("llama"), __import__("pathlib").Path(r"{tmp_path}"))
        config = GenerationConfig(max_new_tokens=6, batch_size=4, length_buckets=[16])
        plain = [r.token_ids for r in Generator(model, t.IdTokenizer(), config).run_batch(t.PROMPTS)]
        mesh_config = MeshConfig(data=2, fsdp=2, tensor=2)
        mesh = make_mesh(mesh_config)
        sharded = Generator(model, t.IdTokenizer(), config, mesh=mesh, rules=mesh_config.rules)
        assert [r.token_ids for r in sharded.run_batch(t.PROMPTS)] == plain
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_prompt_files_resume_keep_order_and_record_errors(tmp_path, monkeypatch):
    from jaxcult.generation.files import generate_file

    model = jaxcult_copy(tiny_hf("llama"), tmp_path)

    class Words(IdTokenizer):
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [int(w[1:]) for w in text.split()]}

    lines = [json.dumps({"id": f"p{i}", "prompt": " ".join(f"t{5 + (i * 7 + j) % 80}"
                                                             for j in range(1 + i % 9))})
             for i in range(13)]
    lines[4] = "{not json"
    lines[7] = json.dumps({"id": "p7", "prompt": " ".join(["t5"] * 40)})
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    config = GenerationConfig(max_new_tokens=4, batch_size=2, length_buckets=[8, 16])
    generator = Generator(model, Words(), config)
    full = tmp_path / "full.jsonl"
    counts = generate_file(generator, prompts, full, window=4)
    rows = [json.loads(x) for x in full.read_text().splitlines()]
    assert counts == {"prompts": 13, "skipped": 0, "generated": 11, "errors": 2}
    assert [r["index"] for r in rows] == list(range(13))
    assert "invalid JSON" in rows[4]["error"] and "largest length bucket" in rows[7]["error"]
    # an interrupted run: 6 complete lines and a torn one; the restart skips the 6
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(x + "\n" for x in full.read_text().splitlines()[:6]) + '{"index": 6, "pro')
    assert generate_file(generator, prompts, partial, window=4)["skipped"] == 6
    assert partial.read_text() == full.read_text()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "t9"}) + "\n")
    with pytest.raises(UserError, match="written for other prompts"):
        generate_file(generator, other, full)


@needs_minilm
def test_generate_command_runs_a_file_and_rejects_bad_input(tmp_path, capsys):
    from jaxcult import assets
    from jaxcult.cli import main

    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2)).eval()
    hf.save_pretrained(tmp_path / "lm")
    minilm = assets.get_asset("minilm-l6").path()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (minilm / name).exists():
            (tmp_path / "lm" / name).write_bytes((minilm / name).read_bytes())
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello there"}\n{"id": 7, "prompt": "good morning"}\n')
    out = tmp_path / "o.jsonl"
    args = ["generate", str(tmp_path / "lm"), "--prompts", str(prompts), "--out", str(out)]
    assert main([*args, "max_new_tokens=3", "batch_size=2", "length_buckets=[8]"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and rows[1]["id"] == 7
    assert all(r["completion_tokens"] <= 3 for r in rows)
    prompts.write_text("\n")
    assert main(args) == 2
    assert "no prompts (the file is empty)" in capsys.readouterr().err
    assert main([*args, "top_p=2"]) == 2
    assert "top_p: expected less than or equal to 1" in capsys.readouterr().err
    assert main([*args, "max_tokens=3"]) == 2
    assert "unknown key 'max_tokens' (did you mean 'max_new_tokens'?)" in capsys.readouterr().err


def test_shared_prefix_logprobs_equal_full_forwards(tmp_path):
    """Groups of prompts with a common start, of different prefix and suffix lengths, an empty
    shared prefix and identical prompts: the same numbers as a transformers forward each."""
    from jaxcult.generation.shared_prefix import common_prefix, shared_prefix_logprobs

    hf = tiny_hf("llama")
    model = jaxcult_copy(hf, tmp_path)

    class Words(IdTokenizer):
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [int(w[1:]) for w in text.split()]}

    text = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731
    groups = [[[5, 6, 7, 8, 9], [5, 6, 7, 3], [5, 6, 7, 40, 41, 42, 43]],
              [[11, 12, 13], [20, 21], [11, 30]],              # no shared prefix
              [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12], [1, 2, 3]],
              [[50, 51], [50, 51], [50, 51]]]                  # identical: a one-token suffix
    assert [common_prefix(g) for g in groups] == [3, 0, 2, 1]
    candidates = [3, 17, 60]
    found = shared_prefix_logprobs(model, Words(), [[text(p) for p in g] for g in groups],
                                   candidates, GenerationConfig(batch_size=2, length_buckets=[4, 8, 16]))
    for group, values in zip(groups, found):
        for ids, row in zip(group, values):
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0, -1], -1)
            np.testing.assert_allclose(row, logp[candidates].numpy(), atol=1e-5)


def test_prefix_cache_reuses_stored_starts_and_decodes_as_without_it(tmp_path):
    """Two dialogue-like turns (each prompt extends an earlier one, the instructions after the
    history change; a new dialogue joins at turn 1): with the prefix cache the reused starts
    are not recomputed, and greedy tokens, their log-probabilities and a repetition penalty's
    effect equal a plain prefill's."""
    from jaxcult.generation.prefix_cache import common_start

    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    common = dict(max_new_tokens=5, batch_size=4, length_buckets=[8, 16, 32], chunk=2,
                  repetition_penalty=1.3, stop_token_ids=[])
    plain = Generator(model, IdTokenizer(), GenerationConfig(**common))
    cached = Generator(model, IdTokenizer(), GenerationConfig(**common, prefix_cache_mb=1))
    history = [[5, 17, 42, 8], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [23, 24]]
    ask = [90, 91, 92]
    sent, reusable = [], 0
    for turn in range(2):
        if turn == 1:
            history.append([60, 61])   # a new dialogue: nothing to reuse, beside rows that do
        prompts = [h + ask for h in history]
        reusable += sum(max([min(common_start(np.array(s), np.array(p)), len(p) - 1)
                             for s in sent], default=0) for p in prompts)
        ours = cached.run_batch(prompts, top_logprobs=0)
        theirs = plain.run_batch(prompts, top_logprobs=0)
        for mine, reference in zip(ours, theirs):
            assert mine.token_ids == reference.token_ids, turn
            np.testing.assert_allclose(mine.logprobs, reference.logprobs, atol=1e-5)
        sent += prompts
        history = [h + r.token_ids[:2] for h, r in zip(history, ours)]
    assert cached.prefix_cache.reused_tokens == reusable >= 4 + 10 + 2


def test_prefix_cache_evicts_least_recently_used_and_refuses_what_cannot_work(tmp_path):
    from jaxcult.generation.prefix_cache import BLOCK, PrefixCache

    model = jaxcult_copy(tiny_hf("llama"), tmp_path)
    config = GenerationConfig(max_new_tokens=2, batch_size=1, length_buckets=[BLOCK, 2 * BLOCK],
                              prefix_cache_mb=1)
    generator = Generator(model, IdTokenizer(), config)
    store = generator.prefix_cache
    assert store.size == 0                           # allocated when first needed
    store.budget = 4                                 # at most two 2-block prompts
    first, second, third = ([k] * (BLOCK + 4) for k in (5, 6, 7))
    for prompt in (first, second, first + [8], third):
        generator.run_batch([prompt])
    # `first + [8]` replaced `first` (it extends it); `third` evicted `second` (least recent);
    # `first + [8]` reused BLOCK of its 36 tokens: reused + the new tokens' bucket fill 2 * BLOCK
    assert sorted(e.ids[0] for e in store.entries) == [5, 7] and store.size == 4
    assert store.reused_tokens == BLOCK
    big = SimpleNamespace(num_key_value_heads=8, head_dim=128, num_hidden_layers=32,  # 8B-like
                          dtype="bfloat16")
    with pytest.raises(UserError, match="1 MB cannot hold one prompt of the largest length "
                       "bucket \\(4096 tokens need 512 MB"):
        PrefixCache(big, 1, 4096)
    windowed = SimpleNamespace(config=SimpleNamespace(sliding_window=4))
    with pytest.raises(UserError, match="sliding-window attention"):
        Generator._prefix_cache(windowed, config, None)
