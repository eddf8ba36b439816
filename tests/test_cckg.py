"""Cultural commonsense graphs (issue 43's building blocks): node merging at the threshold,
maximal paths against a brute-force enumeration, edge cleaning, the JSON repair of teacher
replies, sentence embeddings against sentence-transformers, retrieval against a brute-force
cosine ranking."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import needs_minilm

from jaxcult.eval.sentence_embeddings import SentenceEncoder, cosine_matrix, top_k
from jaxcult.recipes.cckg.graph import (
    Edge,
    clean_edges,
    maximal_paths,
    merge_targets,
    relations_along,
    render,
)
from jaxcult.recipes.cckg.replies import parse_expansion, parse_generation, repair_object


def test_merging_happens_strictly_above_the_threshold():
    similarity = np.array([[0.8, 0.79],             # at the threshold: a new node
                           [0.8000001, 0.95],       # just above: the first above, or the best
                           [0.1, 0.2]])
    assert merge_targets(similarity, 0.8) == [None, 0, None]
    assert merge_targets(similarity, 0.8, merge="best") == [None, 1, None]


def _brute_force_maximal(edges, sources):
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    linked = {(e.source, e.target) for e in edges}
    paths = [p for n in range(2, len(nodes) + 1) for p in itertools.permutations(nodes, n)
             if p[0] in sources and all(pair in linked for pair in zip(p, p[1:]))]
    return {p for p in paths
            if not any(len(q) > len(p) and set(p) <= set(q) for q in paths)}


@pytest.mark.parametrize("seed", range(12))
def test_maximal_paths_equal_a_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    nodes = [f"n{i}" for i in range(int(rng.integers(3, 7)))]
    edges = [Edge(a, b, "xNext", "t") for a in nodes for b in nodes
             if a != b and rng.random() < 0.35]
    sources = list(rng.choice(nodes, size=2, replace=False))
    found = maximal_paths(edges, sources)
    assert {tuple(p) for p in found} == _brute_force_maximal(edges, set(sources))
    assert [len(p) for p in found] == sorted((len(p) for p in found), reverse=True)


def test_cleaning_and_rendering():
    edges = [Edge("cook rice", "eat together", "xNext", "meals"),
             Edge("cook rice", "eat together", "oNext", "festivals"),   # same pair elsewhere
             Edge("eat together", "cook rice", "xNeed", "meals"),       # its reverse
             Edge("wash hands", "wash hands", "xNeed", "meals"),
             Edge("xNext", "pray", "xNext", "meals"),
             Edge("eat together", "wash dishes", "oNext", "meals")]
    kept, dropped = clean_edges(edges)
    assert kept == [edges[0], edges[5]]
    assert dropped == {"duplicate": 1, "self_loop": 1, "relation_as_node": 1, "reversed_pair": 1}
    path = maximal_paths(kept, ["cook rice"])[0]
    assert render(path, relations_along(kept, path)) == (
        "cook rice---xNext--->eat together\neat together---oNext--->wash dishes")
    assert render(path) == "- cook rice → eat together\n- eat together → wash dishes"


GOOD = {"action": "visit elders at New Year", "knowledge": "receive red envelopes",
        "relation_type": "oNext", "result": "If you visit elders, then they give red envelopes."}


def test_json_replies_are_read_and_malformed_ones_repaired():
    clean = parse_generation("Here you go:\n" + json.dumps([GOOD, GOOD]) + "\nHope it helps")
    assert clean.records == [GOOD, GOOD] and clean.repaired == 0
    broken = ("[{'action': 'bow to guests', 'knowledge': 'guests bow back', "
              "'relation_type': 'oNext', 'result': \"If you bow, then they bow back.\"},\n"
              '{action: "take off shoes", knowledge: "wear slippers", relation_type: "xNext", '
              'result: "If you take off shoes, then you wear slippers.",},\n'
              '{"action": "pour tea", "knowledge": "tap the table", "relation_type": "oReact", '
              '"result": "If someone pours tea, then you tap the table."},\n'
              '{"action": "eat noodles", "knowledge": "slurp", "relation_type": "xNext"},\n'
              '{"action": "give a gift", "knowledge": "refuse twice", "relation_type": "oNext", '
              '"result": "If you give a gift, then they refuse twice')
    parsed = parse_generation(broken)
    assert [r["action"] for r in parsed.records] == ["bow to guests", "take off shoes",
                                                     "give a gift"]
    assert parsed.records[2]["result"] == "If you give a gift, then they refuse twice"
    assert parsed.dropped == {"unknown relation": 1, "missing field": 1}
    assert parsed.repaired == 3
    assert parse_generation("I cannot help with that.").records == []
    assert repair_object("{no pairs here}") is None


def test_expansion_replies_split_intermediate_and_next_steps():
    step = {"action": "buy mooncakes", "knowledge": "share them", "relation_type": "xNext",
            "event": "If you buy mooncakes, then you share them."}
    whole = json.dumps({"intermediate_steps": [step], "next_steps": [step, step]})
    middle, following = parse_expansion(whole)
    assert (len(middle.records), len(following.records)) == (1, 2)
    broken = whole.replace('"next_steps"', "next_steps").replace("}]}", "},]}")[:-1]
    middle, following = parse_expansion("Sure! " + broken)
    assert (len(middle.records), len(following.records)) == (1, 2)


def _reference(st, path, max_length: int):
    """sentence-transformers' mean-pooled, normalised encoder (all-MiniLM-L6-v2's modules)."""
    try:
        from sentence_transformers import models
    except ImportError:   # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules as models
    transformer = models.Transformer(str(path), max_seq_length=max_length)
    width = transformer.auto_model.config.hidden_size
    return st.SentenceTransformer(modules=[transformer, models.Pooling(width, "mean"),
                                           models.Normalize()], device="cpu")


def test_sentence_embeddings_equal_sentence_transformers(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    import torch
    import transformers

    from jaxcult.hub.pretrained import load_pretrained

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48)
    transformers.BertModel(config).eval().save_pretrained(tmp_path / "bert")
    texts = ["If you visit elders, they give red envelopes", "bow", "a b c d e f g h i j k"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *sorted({w.lower() for t in texts
                                                          for w in t.split()})]
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(tmp_path / "bert" / "vocab.txt")).save_pretrained(
        tmp_path / "bert")
    reference = _reference(st, tmp_path / "bert", 8)
    ours = SentenceEncoder(*load_pretrained(tmp_path / "bert"), max_length=8, batch_size=2)
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


@needs_minilm
def test_minilm_embeddings_equal_sentence_transformers():
    """all-MiniLM-L6-v2, the official merging encoder for English, on assertion-like texts."""
    st = pytest.importorskip("sentence_transformers")
    from jaxcult import assets

    texts = ["If you visit elders at New Year, then they give you red envelopes.",
             "receive red envelopes", "Before a wedding, families exchange gifts.", "bow"]
    reference = _reference(st, assets.get_asset("minilm-l6").path(), 256)
    ours = SentenceEncoder.load("minilm-l6")
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


def test_retrieval_equals_a_brute_force_cosine_ranking():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(4, 6)), rng.normal(size=(9, 6))
    corpus[5] = corpus[2] * 3            # the same direction: a tie, the lower index first
    found = top_k(queries, corpus, 3)
    for query, picked in zip(queries, found):
        scores = [float(query @ c / np.linalg.norm(query) / np.linalg.norm(c)) for c in corpus]
        ranked = sorted(range(len(corpus)), key=lambda j: (-round(scores[j], 12), j))
        assert picked == ranked[:3]
    np.testing.assert_allclose(cosine_matrix(queries, corpus)[0, 2], cosine_matrix(
        queries, corpus)[0, 5])
