"""Sequence packing: documents packed into full rows with segment ids give each document the
same loss as unpacked (masked LM on BERT- and RoBERTa-style positions, causal LM on a Llama),
so packing changes the compute spent on padding, not what is learned."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import needs_minilm

from jaxcult.data.packing import pack_rows

TEXTS = ["Short one.", "A somewhat longer sentence about trains leaving the station late.",
         "Tiny.", "Masked language modelling trains language adapters on plain text.",
         "Packing puts several documents into one row.", "Each keeps its own positions.",
         "Attention stays inside a document.", "The end."]


def test_pack_rows_fills_rows_greedily_with_whole_documents():
    lengths = [3, 4, 2, 5, 1]
    ids = np.zeros((5, 6), np.int32)
    mask = np.zeros((5, 6), np.int32)
    for doc, length in enumerate(lengths):
        ids[doc, :length] = np.arange(1, length + 1) + 10 * (doc + 1)
        mask[doc, :length] = 1
    packed = pack_rows({"input_ids": ids, "attention_mask": mask}, max_length=8, pad_id=-1)
    np.testing.assert_array_equal(packed["segment_ids"], [[1, 1, 1, 2, 2, 2, 2, 0],
                                                          [1, 1, 2, 2, 2, 2, 2, 3]])
    np.testing.assert_array_equal(packed["input_ids"][0], [11, 12, 13, 21, 22, 23, 24, -1])
    np.testing.assert_array_equal(packed["input_ids"][1], [31, 32, 41, 42, 43, 44, 45, 51])
    np.testing.assert_array_equal(packed["attention_mask"], packed["segment_ids"] != 0)
    left = pack_rows({"input_ids": ids[:, ::-1].copy(), "attention_mask": mask[:, ::-1].copy()},
                     max_length=8, pad_id=-1)   # left-padded documents keep their token order
    np.testing.assert_array_equal(left["input_ids"][0], [13, 12, 11, 24, 23, 22, 21, -1])


def per_document(nll: np.ndarray, weight: np.ndarray, docs: np.ndarray, count: int) -> np.ndarray:
    """Mean loss per document (nan for a document without a trained position)."""
    totals = np.bincount(docs[weight > 0], nll[weight > 0], minlength=count)
    with np.errstate(invalid="ignore"):
        return totals / np.bincount(docs[weight > 0], minlength=count)


def document_of(segment_ids: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Index of the document each entry `where` [rows, n] (a token position) belongs to."""
    base = np.concatenate([[0], np.cumsum(segment_ids.max(1))[:-1]])
    return base[:, None] + np.take_along_axis(segment_ids, where, 1) - 1


@needs_minilm
@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_packed_masked_lm_gives_each_document_its_unpacked_loss(model_type):
    from jaxcult import models
    from jaxcult.data.mlm import tokenize_masked
    from jaxcult.hub.pretrained import load_tokenizer
    from jaxcult.models.mlm import MaskedLM

    tokenizer = load_tokenizer("minilm-l6")
    encoder = models.build(models.EncoderConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=80, model_type=model_type,
        pad_token_id=0))
    model = MaskedLM(encoder, seed=3)
    common = dict(probability=0.4, whole_word=False, seed=5)
    plain = tokenize_masked(TEXTS, tokenizer, 40, "plain", **common).arrays
    packed = tokenize_masked(TEXTS, tokenizer, 40, "packed", pack=True, **common).arrays
    assert len(packed["input_ids"]) < len(TEXTS)

    def nll(arrays):
        logits = model(jnp.asarray(arrays["input_ids"]), jnp.asarray(arrays["attention_mask"]),
                       positions=jnp.asarray(arrays["masked_positions"]),
                       segment_ids=(jnp.asarray(arrays["segment_ids"])
                                    if "segment_ids" in arrays else None))
        return np.asarray(optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.asarray(arrays["labels"])))

    rows = np.arange(len(TEXTS))[:, None].repeat(plain["labels"].shape[1], 1)
    expected = per_document(nll(plain), plain["loss_mask"], rows, len(TEXTS))
    docs = document_of(packed["segment_ids"], packed["masked_positions"])
    found = per_document(nll(packed), packed["loss_mask"], docs, len(TEXTS))
    assert np.isfinite(expected).sum() >= 6   # a very short text may draw no mask
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
    unmasked = dict(packed, segment_ids=np.minimum(packed["segment_ids"], 1))  # one big document
    assert np.nanmax(np.abs(per_document(nll(unmasked), packed["loss_mask"], docs, len(TEXTS))
                            - expected)) > 1e-3


def test_packed_causal_lm_gives_each_document_its_unpacked_loss(tiny_chat_model):
    from jaxcult.data import lm
    from jaxcult.hub.pretrained import load_model

    root, _, tokenizer = tiny_chat_model
    model = load_model(str(root))
    plain = lm.tokenize_texts(TEXTS, tokenizer, 80, "plain").arrays
    packed = pack_rows(plain, 80, tokenizer.pad_token_id)
    assert len(packed["input_ids"]) < len(TEXTS)

    def nll(arrays):
        segments = arrays.get("segment_ids")
        logits = model(jnp.asarray(arrays["input_ids"]), jnp.asarray(arrays["attention_mask"]),
                       segment_ids=None if segments is None else jnp.asarray(segments)).logits
        return np.asarray(optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.asarray(arrays["labels"])))

    width = plain["input_ids"].shape[1]
    expected = per_document(nll(plain), plain["loss_mask"],
                            np.arange(len(TEXTS))[:, None].repeat(width, 1), len(TEXTS))
    positions = np.broadcast_to(np.arange(packed["input_ids"].shape[1]), packed["input_ids"].shape)
    docs = document_of(packed["segment_ids"], positions)
    found = per_document(nll(packed), packed["loss_mask"], docs, len(TEXTS))
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
    crossing = {k: v for k, v in packed.items() if k != "segment_ids"}  # documents see earlier ones
    assert np.abs(per_document(nll(crossing), packed["loss_mask"], docs, len(TEXTS))
                  - expected).max() > 1e-3
