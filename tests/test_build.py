"""Building a run: tokenizers without weights, names checked before loading, PEFT coverage."""

from __future__ import annotations

import pytest
from conftest import needs_minilm
from flax import nnx

from jaxcult.config_loading import load_config
from jaxcult.errors import UserError
from jaxcult.models.layers import Dense
from jaxcult.run.build import build_model, resolve_plugins, tokenizer_of
from jaxcult.tasks.choice import Classification

TINY = ["model.name=random", "model.tokenizer=minilm-l6", "model.max_length=16",
        "model.overrides={model_type: bert, vocab_size: 30522, hidden_size: 32, "
        "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 37}"]


@needs_minilm
def test_tokenizer_loads_without_reading_weights(tmp_path):
    from jaxcult import assets

    source = assets.get_asset("minilm-l6").path()
    broken = tmp_path / "model"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (source / name).exists():
            (broken / name).write_bytes((source / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not weights")
    config = load_config(None, [f"model.name={broken}"])
    assert tokenizer_of(config)("hello world")["input_ids"][0] == 101
    with pytest.raises(UserError, match="unreadable safetensors"):
        build_model(config, resolve_plugins(config)[0].task, tokenizer_of(config))


def test_names_and_compatibility_are_checked_before_any_loading():
    def error(*overrides: str) -> str:
        with pytest.raises(UserError) as info:
            resolve_plugins(load_config(None, [*TINY, *overrides]))
        return str(info.value)

    assert "cannot read xcopa's 'multiple_choice' records" in error("data.name=xcopa")
    assert "unknown evaluator 'f1'" in error("task.evaluators=[f1]")
    assert "has 8 labels, config says 3" in error("task.num_labels=3")
    assert "unknown key 'task.pool' of task family 'classification' (did you mean 'pooling'?)" \
        in error("task.pool=mean")
    assert "data.target_languages: jaxcult_multilingual has no language 'xx'" in error(
        "data.target_languages=[de, xx]")


class SideAdapterTask(Classification):
    """A user task whose model keeps an adapter-like module outside `head`."""

    def build_model(self, backbone, config):
        model = super().build_model(backbone, config)
        model.side_adapter = Dense(4, 4, axes=("embed", "adapter"), rngs=nnx.Rngs(0))
        return model


@needs_minilm
def test_a_peft_parameter_outside_every_group_is_an_error():
    config = load_config(None, TINY)
    task = SideAdapterTask(config.task, ("a", "b"))
    with pytest.raises(UserError, match="'side_adapter.bias' belongs to a PEFT module but to no"):
        build_model(config, task, tokenizer_of(config))
