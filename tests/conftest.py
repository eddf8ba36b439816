"""Shared fixtures: tiny configs and paths; real-data tests skip when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the Hugging Face Hub (CI has no access): Hub ids fail fast instead of timing
# out; the download path itself is tested with a stand-in for `snapshot_download`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
