"""LoRA: identity at init, merge == unmerged, and PEFT-format interop with the real `peft`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from jaxcult import load_pretrained  # noqa: E402
from jaxcult.errors import UserError  # noqa: E402
from jaxcult.hub.peft_format import export_peft, import_peft  # noqa: E402
from jaxcult.peft import lora  # noqa: E402


def tiny(kind, path):
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, tie_word_embeddings=False)
        hf = transformers.LlamaForCausalLM(config).eval()
    else:
        config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=37)
        hf = transformers.BertModel(config).eval()
    hf.save_pretrained(path)
    model, _ = load_pretrained(path)
    return hf, model


def ids():
    return np.random.default_rng(0).integers(0, 64, size=(2, 7))


def jax_out(model, kind):
    out = model(jnp.asarray(ids()))
    return np.asarray(out.logits if kind == "llama" else out.last_hidden_state)


def torch_out(model, kind):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids()))
    return (out.logits if kind == "llama" else out.last_hidden_state).numpy()


def randomise(model):
    key = jax.random.key(3)
    for i, (_, dense) in enumerate(lora.lora_modules(model)):
        dense.lora_b[...] = 0.1 * jax.random.normal(jax.random.fold_in(key, i), dense.lora_b.shape)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_identity_at_init_and_merge(kind, tmp_path):
    _, model = tiny(kind, tmp_path / "base")
    base = jax_out(model, kind)
    paths = lora.add_lora(model, ["q", "v"], r=4, alpha=8)
    assert len(paths) == 4
    np.testing.assert_array_equal(jax_out(model, kind), base)
    randomise(model)
    unmerged = jax_out(model, kind)
    assert np.abs(unmerged - base).max() > 1e-3
    factors = lora.factors_of(model)
    lora.merge(model)
    assert not lora.lora_modules(model)
    np.testing.assert_allclose(jax_out(model, kind), unmerged, atol=1e-5)
    lora.unmerge(model, factors)
    np.testing.assert_allclose(jax_out(model, kind), unmerged, atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_export_loads_in_peft_with_same_outputs(kind, tmp_path):
    hf, model = tiny(kind, tmp_path / "base")
    lora.add_lora(model, ["q", "v"], r=4, alpha=8)
    randomise(model)
    export_peft(model, tmp_path / "adapter", alpha=8)
    peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    np.testing.assert_allclose(torch_out(peft_model, kind), jax_out(model, kind), atol=1e-4)


def test_modules_to_save_round_trip_with_peft(tmp_path):
    """LoRA + a fully trained lm_head: exported and imported through PEFT's format."""
    hf, model = tiny("llama", tmp_path / "base")
    lora.add_lora(model, ["q", "v"], r=4, alpha=8, dropout=0.1)
    randomise(model)
    model.lm_head.kernel[...] = model.lm_head.kernel[...] + 0.5
    export_peft(model, tmp_path / "adapter", alpha=8, dropout=0.1, saved=("lm_head",))
    peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    np.testing.assert_allclose(torch_out(peft_model, "llama"), jax_out(model, "llama"), atol=1e-4)
    hf2, fresh = tiny("llama", tmp_path / "base2")
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], init_lora_weights=False,
                             modules_to_save=["lm_head"])
    saved = peft.get_peft_model(hf2, config)
    with torch.no_grad():
        saved.base_model.model.lm_head.modules_to_save["default"].weight.add_(0.5)
    saved.eval().save_pretrained(str(tmp_path / "saved"))
    attached = import_peft(fresh, tmp_path / "saved")
    assert "lm_head.kernel" in attached
    np.testing.assert_allclose(jax_out(fresh, "llama"), torch_out(saved, "llama"), atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_peft_saved_adapter_imports(kind, tmp_path):
    hf, model = tiny(kind, tmp_path / "base")
    targets = ["q_proj", "v_proj"] if kind == "llama" else ["query", "value"]
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    peft_model = peft.get_peft_model(hf, config).eval()
    peft_model.save_pretrained(str(tmp_path / "saved"))
    attached = import_peft(model, tmp_path / "saved")
    assert len(attached) == 4
    np.testing.assert_allclose(jax_out(model, kind), torch_out(peft_model, kind), atol=1e-4)


def test_bad_lora_inputs(tmp_path):
    hf, model = tiny("llama", tmp_path / "base")
    with pytest.raises(UserError, match="match no projection"):
        lora.add_lora(model, ["nothing_here"], r=4, alpha=8)
    torch.manual_seed(0)
    bigger = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2)).eval()
    saved = peft.get_peft_model(bigger, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    saved.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(UserError, match="another model size"):
        import_peft(model, tmp_path / "other")
