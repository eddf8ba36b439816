"""A model's generation_config.json under a config's settings: which keys it fills, that an
explicit setting or a stage's own choice wins, and that greedy decoding with a model's
repetition penalty equals transformers' `generate` reading the same file."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from jaxcult.config import GenerationConfig
from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults
from jaxcult.recipes.clca.config import JudgeGeneration, RoleplayGeneration

LLAMA_INSTRUCT = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}


def test_unset_sampling_settings_take_the_models_and_set_ones_stay():
    plain = with_model_defaults(GenerationConfig(), {**LLAMA_INSTRUCT, "repetition_penalty": 1.05})
    assert (plain.temperature, plain.top_p, plain.repetition_penalty) == (0.6, 0.9, 1.05)
    assert plain.do_sample is False                       # whether to sample is the stage's
    given = with_model_defaults(GenerationConfig(temperature=1.0), LLAMA_INSTRUCT)
    assert (given.temperature, given.top_p) == (1.0, 0.9)   # restating a default still counts
    roleplay = with_model_defaults(RoleplayGeneration(), LLAMA_INSTRUCT)
    assert (roleplay.temperature, roleplay.top_p) == (0.6, 0.7)   # the official top-p 0.7 stays
    assert isinstance(roleplay, RoleplayGeneration) and roleplay.max_new_tokens == 500
    judge = with_model_defaults(JudgeGeneration(), {"repetition_penalty": 1.05})
    assert judge.repetition_penalty == 1.05 and judge.do_sample is False   # greedy, as HF's
    assert with_model_defaults(plain, {"temperature": 0.2}).temperature == 0.6   # resolved once


@pytest.fixture
def with_generation_config(tiny_chat_model, tmp_path):
    def make(values: dict):
        root = tmp_path / "model"
        shutil.copytree(tiny_chat_model[0], root, dirs_exist_ok=True)
        (root / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **values}))
        return root
    return make


def test_the_file_is_read_and_unusable_values_are_left_out_with_a_warning(
        with_generation_config, tiny_chat_model, caplog):
    root = with_generation_config({**LLAMA_INSTRUCT, "top_k": None, "repetition_penalty": 0.0})
    with caplog.at_level(logging.WARNING):
        assert load_generation_defaults(root) == {"temperature": 0.6, "top_p": 0.9}
    assert "generation_config.json: repetition_penalty=0.0 left out" in caplog.text
    assert (tiny_chat_model[0] / "generation_config.json").exists()   # with no sampling keys
    assert load_generation_defaults(tiny_chat_model[0]) == {}


def test_greedy_decoding_with_the_models_repetition_penalty_equals_transformers(
        with_generation_config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxcult.generation import generate
    from jaxcult.run.generate import load_generation_model

    root = with_generation_config({"repetition_penalty": 1.8})
    model, tokenizer = load_generation_model(str(root), None, merge=False)
    config = GenerationConfig(max_new_tokens=10, length_buckets=[32])
    ours = generate(model, tokenizer, ["Tea and"], with_model_defaults(
        config, load_generation_defaults(root)))[0].token_ids
    plain = generate(model, tokenizer, ["Tea and"], config)[0].token_ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(root).eval()
    ids = tokenizer("Tea and")["input_ids"]
    with torch.no_grad():   # transformers applies the file's penalty itself
        theirs = hf.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids):]
    assert ours == theirs.tolist()[:len(ours)] and ours != plain
