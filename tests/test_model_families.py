"""The decoder families the cultural papers use — Gemma 2, Gemma 3, Qwen3, Cohere, Phi-3 —
against transformers on tiny random configs: logits, batched greedy generation, LoRA adapters
in PEFT's format, and models written back for transformers.

Every family's tiny config turns on what distinguishes it (soft-capping, a sliding window
shorter than the prompts, local/global rotary bases with scaling, QK-norm, partial rotary,
a logit scale), and every parameter is perturbed so that norm offsets and biases matter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_asset

from jaxcult.config import GenerationConfig
from jaxcult.generation import Generator
from jaxcult.hub.export import save_pretrained
from jaxcult.hub.peft_format import export_peft
from jaxcult.hub.pretrained import load_model
from jaxcult.peft import lora

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EOS, PAD = 3, 0
COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD,
              bos_token_id=1, eos_token_id=EOS)
SLIDING, FULL = "sliding_attention", "full_attention"


def hf_config(family: str, window: int = 4):
    """A tiny config of `family` whose sliding layers see `window` positions."""
    if family == "gemma2":
        return transformers.Gemma2Config(
            **COMMON, num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=16,
            sliding_window=window, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
    if family == "gemma3":
        return transformers.Gemma3TextConfig(
            **COMMON, num_hidden_layers=4, head_dim=8, query_pre_attn_scalar=16,
            sliding_window=window, layer_types=[SLIDING, SLIDING, FULL, SLIDING],
            rope_parameters={FULL: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
                             SLIDING: {"rope_type": "default", "rope_theta": 100.0}})
    if family == "qwen3":
        return transformers.Qwen3Config(
            **COMMON, num_hidden_layers=2, head_dim=12, tie_word_embeddings=True,
            use_sliding_window=True, sliding_window=window, max_window_layers=1)
    if family == "cohere":
        return transformers.CohereConfig(**COMMON, num_hidden_layers=2, logit_scale=0.5,
                                         use_qk_norm=True)
    return transformers.Phi3Config(
        **COMMON, num_hidden_layers=2, sliding_window=window,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.5})


FAMILIES = ["gemma2", "gemma3", "qwen3", "cohere", "phi3"]
LORA_TARGETS = {"phi3": ["qkv_proj", "gate_up_proj"]}  # fused: the checkpoint's module names


def perturbed(config, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, transformers model, its directory)."""
    path = tmp_path_factory.mktemp(request.param) / "hf"
    hf = perturbed(hf_config(request.param))
    hf.save_pretrained(path)
    return request.param, hf, path


IDS = np.random.default_rng(0).integers(4, 97, size=(3, 11))
MASK = np.ones_like(IDS)
MASK[1, :3], MASK[2, :6] = 0, 0  # left padding


def hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()


def our_logits(model) -> np.ndarray:
    positions = np.maximum(np.cumsum(MASK, 1) - 1, 0)
    return np.asarray(model(jnp.asarray(IDS), jnp.asarray(MASK), jnp.asarray(positions)).logits)


def test_logits_equal_transformers_with_a_window_shorter_than_the_text(family):
    name, hf, path = family
    reference, ours = hf_logits(hf), our_logits(load_model(path))
    real = MASK.astype(bool)
    assert np.abs(reference - ours)[real].max() <= 1e-4
    if name != "cohere":  # the window really cuts: with a longer one the reference differs
        unwindowed = perturbed(hf_config(name, window=64))
        assert np.abs(hf_logits(unwindowed) - reference)[real].max() > 1e-3


class IdTokenizer:
    eos_token_id, pad_token_id = EOS, PAD

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)


PROMPTS = [[5, 17, 42, 8, 9, 60], [11, 12], [70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80], [23]]


def test_batched_greedy_generation_equals_transformers(family):
    _, hf, path = family
    config = GenerationConfig(max_new_tokens=32, batch_size=4, length_buckets=[8, 16], chunk=8)
    ours = Generator(load_model(path), IdTokenizer(), config).run_batch(PROMPTS)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.arange(width)[None] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=32, do_sample=False,
                          eos_token_id=EOS, pad_token_id=PAD)
    for row, completion in enumerate(ours):
        reference = out[row, width:].tolist()
        assert completion.token_ids == reference[:len(completion.token_ids)], row
        assert all(t == PAD for t in reference[len(completion.token_ids):]), row


def test_lora_export_loads_in_peft_with_equal_logits(family, tmp_path):
    peft = pytest.importorskip("peft")
    name, hf, path = family
    model = load_model(path)
    targets = LORA_TARGETS.get(name, ["q", "v", "down"])
    assert lora.add_lora(model, targets, r=4, alpha=8)
    key = jax.random.key(3)
    for i, (_, dense) in enumerate(lora.lora_modules(model)):
        dense.lora_b[...] = 0.1 * jax.random.normal(jax.random.fold_in(key, i), dense.lora_b.shape)
    export_peft(model, tmp_path / "adapter", alpha=8)
    adapted = peft.PeftModel.from_pretrained(perturbed(hf.config), tmp_path / "adapter").eval()
    real = MASK.astype(bool)
    assert np.abs(hf_logits(adapted) - our_logits(model))[real].max() <= 1e-4
    assert np.abs(hf_logits(adapted) - hf_logits(hf))[real].max() > 1e-3  # the adapter acts


def test_models_written_back_load_in_transformers(family, tmp_path):
    _, hf, path = family
    save_pretrained(load_model(path), tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    real = MASK.astype(bool)
    assert np.abs(hf_logits(again) - hf_logits(hf))[real].max() <= 1e-5


def gguf_file(family: str, hf, path):
    """`hf` written as llama.cpp's converter writes the family: its architecture's metadata,
    tensor names (the `gguf` package's map), Gemma's norms plus one, no q/k permutation."""
    gguf = pytest.importorskip("gguf")
    c = hf.config
    arch = {"gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3": gguf.MODEL_ARCH.GEMMA3,
            "qwen3": gguf.MODEL_ARCH.QWEN3, "cohere": gguf.MODEL_ARCH.COMMAND_R,
            "phi3": gguf.MODEL_ARCH.PHI3}[family]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    if family == "cohere":
        writer.add_layer_norm_eps(c.layer_norm_eps)
        writer.add_logit_scale(c.logit_scale)
    else:
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    if family in ("gemma2", "gemma3", "qwen3"):
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
    if family == "gemma2":
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)
    if family in ("gemma2", "gemma3", "phi3"):
        writer.add_sliding_window(c.sliding_window)
    rope = c.rope_parameters.get(FULL, c.rope_parameters)
    if family != "gemma2":
        writer.add_rope_freq_base(rope["rope_theta"])
    if family == "gemma3":
        writer.add_rope_freq_base_swa(c.rope_parameters[SLIDING]["rope_theta"])
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if family == "phi3":
        head_dim = c.hidden_size // c.num_attention_heads
        writer.add_rope_dimension_count(int(head_dim * rope["partial_rotary_factor"]))
    names = gguf.get_tensor_name_map(arch, c.num_hidden_layers)
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.numpy().astype(np.float32)
        if family.startswith("gemma") and name.endswith("norm.weight"):
            data = data + 1.0
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_as_llama_cpp_writes_it_loads_with_the_safetensors_logits(family, tmp_path):
    """llama.cpp keeps no `query_pre_attn_scalar` (Gemma: head_dim), Gemma 3's pattern of
    five sliding layers per global one, and no sliding layers for Qwen3: this copy of the
    family's config follows those rules."""
    name, _, _ = family
    settings = {"gemma2": {"query_pre_attn_scalar": 8}, "gemma3": {"query_pre_attn_scalar": 8},
                "qwen3": {"use_sliding_window": False}}.get(name, {})
    config = hf_config(name)
    for key, value in settings.items():
        setattr(config, key, value)
    if name == "qwen3":
        config.sliding_window, config.layer_types = None, [FULL] * config.num_hidden_layers
    if name == "gemma3":
        config.num_hidden_layers, config.layer_types = 6, [SLIDING] * 5 + [FULL]
    hf = perturbed(config, seed=1)
    hf.save_pretrained(tmp_path / "hf")
    from_gguf = load_model(gguf_file(name, hf, tmp_path / "tiny.gguf"))
    real = MASK.astype(bool)
    assert np.abs(our_logits(from_gguf) - hf_logits(hf))[real].max() <= 1e-4
    assert np.abs(our_logits(from_gguf) - our_logits(load_model(tmp_path / "hf")))[real].max() \
        <= 1e-5


PAPER_SIZE = {  # the checkpoints the cultural papers train, by their published config.json
    "gemma2": ("Gemma-2-9B", dict(vocab_size=256000, hidden_size=3584, intermediate_size=14336,
                                  num_hidden_layers=42, num_attention_heads=16,
                                  num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                                  sliding_window=4096)),
    "gemma3": ("Gemma-3-12B (text)", dict(
        vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0})),
    "qwen3": ("Qwen3-8B", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                               num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                               head_dim=128, tie_word_embeddings=False)),
    "cohere": ("aya-expanse-8b", dict(vocab_size=256000, hidden_size=4096,
                                      intermediate_size=14336, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8,
                                      logit_scale=0.125)),
    "phi3": ("Phi-3-mini-4k", dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192,
                                   num_hidden_layers=32, num_attention_heads=32,
                                   num_key_value_heads=32, sliding_window=2047,
                                   pad_token_id=32000)),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_dry_run_plans_the_paper_size_model_from_its_config_json_alone(name, tmp_path, capsys):
    """No weight file: the plan builds shapes only; its parameter count is transformers' count
    of the same config (built on the meta device)."""
    from jaxcult.cli import main

    require_asset("minilm-l6")
    label, settings = PAPER_SIZE[name]
    model_type = {"gemma3": "gemma3_text"}.get(name, name)
    config = transformers.AutoConfig.for_model(model_type, **settings)
    config.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json"]
    with torch.device("meta"):
        expected = sum(p.numel() for p in
                       transformers.AutoModelForCausalLM.from_config(config).parameters())
    code = main(["train", "--dry-run", f"model.name={tmp_path / 'model'}",
                 "model.tokenizer=minilm-l6", "model.dtype=bfloat16",
                 "model.compute_dtype=bfloat16", "task.name=causal_lm", "peft.kind=lora",
                 "data.name=jaxcult_multilingual_text", "trainer.batch_size=8",
                 *(["peft.target_modules=[qkv_proj]"] if name == "phi3" else [])])
    out = capsys.readouterr().out
    assert code == 0, label
    total = int(next(line for line in out.splitlines() if line.startswith("(model total)"))
                .split()[-1].replace(",", ""))
    lora_total = sum(int(line.split()[1].replace(",", "")) for line in out.splitlines()
                     if line.startswith("lora/"))
    assert total - lora_total == expected, label


def test_every_parameter_carries_logical_axes(family):
    """Each family shards by the config's rule table like the others: every parameter names
    one logical axis per dimension."""
    from flax import nnx

    from jaxcult.sharding import axes_of

    _, _, path = family
    for where, variable in nnx.to_flat_state(nnx.state(load_model(path), nnx.Param)):
        assert len(axes_of(variable)) == len(variable.shape), where
