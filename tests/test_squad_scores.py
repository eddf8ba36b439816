"""`squad_scores` against the official SQuAD v1.1 definition and MLQA's per-language rules."""

from __future__ import annotations

import pytest

from jaxcult.errors import UserError
from jaxcult.eval import normalize_answer, squad_scores

# (prediction, gold answers, exact match, F1) worked out by hand from the v1.1 definition
SQUAD_CASES = [
    ("the Eiffel Tower", ["Eiffel Tower"], 100.0, 100.0),           # article removed
    ("Eiffel Tower!", ["eiffel tower"], 100.0, 100.0),              # punctuation, case
    ("in 1889", ["1889"], 0.0, 2 * 0.5 * 1 / 1.5 * 100),          # partial overlap
    ("", ["Paris"], 0.0, 0.0),                                      # empty prediction
    ("Paris France", ["Lyon", "Paris"], 0.0, 2 * 0.5 * 1 / 1.5 * 100),  # best of several golds
    ("a an the", ["the"], 100.0, 0.0),                              # both normalise to empty
    ("New  York", ["new york"], 100.0, 100.0),                      # whitespace
    ("U.S.", ["US"], 100.0, 100.0),                                 # dots removed
    ("Beyoncé", ["Beyonce"], 0.0, 0.0),                             # accents kept
]


@pytest.mark.parametrize("prediction, golds, em, f1", SQUAD_CASES)
def test_squad_v11_definition(prediction, golds, em, f1):
    scores = squad_scores({"q": prediction}, {"q": golds})
    assert scores["exact_match"] == pytest.approx(em)
    assert scores["f1"] == pytest.approx(f1)


def test_missing_prediction_scores_zero_and_averages():
    scores = squad_scores({"a": "x"}, {"a": ["x"], "b": ["y"]})
    assert scores == {"f1": 50.0, "exact_match": 50.0}


def test_bad_references():
    with pytest.raises(UserError):
        squad_scores({}, {})
    with pytest.raises(UserError, match="no gold"):
        squad_scores({"a": "x"}, {"a": []})
    with pytest.raises(UserError, match="language 'xx'"):
        normalize_answer("x", "xx")


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "The cat, a dog.", "cat dog"),
    ("es", "El gato y la casa", "gato y casa"),
    ("de", "Der Hund und die Katze", "hund und katze"),
    ("vi", "những con mèo của tôi", "con mèo tôi"),
    ("ar", "الكتاب جميل", "كتاب جميل"),
    ("hi", "भारत की राजधानी।", "भारत की राजधानी"),          # danda is Unicode punctuation
    ("zh", "北京是中国的首都。", "北 京 是 中 国 的 首 都"),    # per-character segmentation
    ("zh", "iPhone 手机", "iphone 手 机"),                     # latin runs stay whole
])
def test_mlqa_normalisation_per_script(lang, text, expected):
    assert normalize_answer(text, lang) == expected


def test_mlqa_chinese_partial_credit():
    scores = squad_scores({"q": "中国首都"}, {"q": ["首都"]}, lang="zh")
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5 * 100)


def test_unicode_punctuation_only_with_language():
    assert normalize_answer("«Paris»") == "«paris»"            # SQuAD strips ASCII only
    assert normalize_answer("«Paris»", "en") == "paris"
