"""Shared fixtures: tiny configs and paths; real-data tests skip when ../shared/data is absent."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never reach the Hugging Face Hub (CI has no access): Hub ids fail fast instead of timing
# out; the download path itself is tested with a stand-in for `snapshot_download`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One XLA compilation cache per test process (each pytest-xdist worker has its own), in a
# temporary folder that starts empty (as on a clean machine) and is removed at exit: the many
# tiny runs that compile the same train step compile it once; nothing is written to ~/.cache.
# Every process the tests start inherits it (tests/test_compile_cache.py checks jaxcult's own
# cache setting with its own folders).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="jaxcult-tests-xla-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ.setdefault("JAXCULT_COMPILATION_CACHE", "off")
# The tests compile hundreds of small programs and run each for a few steps: LLVM's optimisation
# passes cost more there than they save (compilation ~25-35% shorter at level 0, measured on the
# eleven-layer Fisher test; the programs compute the same functions). Every process the tests
# start inherits it; `xla_flags` adds simulated devices to it.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


@pytest.fixture(autouse=True, scope="session")
def _console_logging():
    """Library messages reach stderr as they do under the `jaxcult` command (tests read them
    with capsys)."""
    from jaxcult.cli import configure_logging

    configure_logging()


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process with `devices` simulated CPU devices."""
    return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def require_asset(name: str) -> None:
    """Skip the calling test unless the offline asset `name` is installed."""
    from jaxcult import assets

    if not assets.get_asset(name).installed():
        pytest.skip(f"asset {name} not installed (jaxcult assets install {name})")


def _minilm_missing() -> bool:
    from jaxcult import assets

    return not assets.get_asset("minilm-l6").installed()


needs_minilm = pytest.mark.skipif(_minilm_missing(),
                                  reason="asset minilm-l6 not installed (jaxcult assets install minilm-l6)")


def tiny_model_yaml(*, layers: int = 2, heads: int = 2, intermediate: int = 37,
                    max_length: int = 16) -> str:
    """The `model:` section of a tiny random BERT with the MiniLM tokenizer (for run-level tests)."""
    return (f"model:\n  name: random\n  tokenizer: minilm-l6\n  max_length: {max_length}\n"
            f"  overrides: {{model_type: bert, vocab_size: 30522, hidden_size: 32, "
            f"num_hidden_layers: {layers}, num_attention_heads: {heads}, "
            f"intermediate_size: {intermediate}}}\n")


def tiny_random_model(model_type: str, *, hidden: int = 32, layers: int = 2, heads: int = 4,
                      intermediate: int = 64, vocab: int = 30522, max_length: int = 32,
                      kv_heads: int | None = None) -> list[str]:
    """Command-line overrides of a tiny random `model_type` (bert or llama) with the MiniLM
    tokenizer; `vocab` below the tokenizer's 30522 only for plans, which read no data."""
    kv = f", num_key_value_heads: {kv_heads}" if kv_heads else ""
    return ["model.name=random", "model.tokenizer=minilm-l6", f"model.max_length={max_length}",
            f"model.overrides={{model_type: {model_type}, vocab_size: {vocab}, hidden_size: "
            f"{hidden}, num_hidden_layers: {layers}, num_attention_heads: {heads}, "
            f"intermediate_size: {intermediate}{kv}}}"]


TINY_CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """A byte-level tokenizer (every byte one token) with a chat template, and a tiny Llama
    saved as an HF directory: (directory, transformers model, tokenizer)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    root = tmp_path_factory.mktemp("tiny-chat")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{ch: i + 3 for i, ch in enumerate(alphabet)}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(root)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    hf.save_pretrained(root)
    return root, hf, tokenizer


def lora_loss_and_grads(model, ids):
    """Next-token loss of a causal LM on `ids` and its gradients for the LoRA factors only."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    is_lora = nnx.All(nnx.Param, lambda path, _: path[-1] in ("lora_a", "lora_b"))
    graphdef, lora, rest = nnx.split(model, is_lora, ...)

    def loss(lora):
        logits = nnx.merge(graphdef, lora, rest)(ids).logits
        return -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), ids[:, 1:, None], -1).mean()

    return jax.jit(jax.value_and_grad(loss))(lora)
