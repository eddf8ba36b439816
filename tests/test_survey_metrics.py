"""Survey metrics against hand-computed values and their reference definitions, and the answer
parser on tricky generations (docs/cultural-eval.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from jaxcult.eval.survey import (
    cultural_distinctiveness,
    histogram,
    individual_accuracy,
    js_distance,
    kl_divergence,
    kl_official,
)
from jaxcult.eval.survey_answers import parse_answer


def test_histogram_puts_unparsed_and_out_of_range_answers_in_the_safeguard_bin():
    counts = histogram([1, 2, 2, None, 5, 0, 4], 1, 4)
    assert counts.tolist() == [1, 2, 0, 1, 3]


def test_kl_in_the_paper_direction_by_hand():
    model, survey = np.array([3, 1, 0]), np.array([1, 1, 2])
    # no smoothing needed where the model puts no mass: 0.75 ln(0.75/0.25) + 0.25 ln(0.25/0.25)
    assert kl_divergence(model, survey, smoothing=0.0) == pytest.approx(0.75 * math.log(3))
    eps = 1e-6
    p = (model + eps) / (4 + 3 * eps)
    q = (survey + eps) / (4 + 3 * eps)
    assert kl_divergence(model, survey) == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert kl_divergence(survey, survey) == 0.0
    # the survey never saw option 1: large but finite with smoothing
    assert 10 < kl_divergence(np.array([1, 0]), np.array([0, 1])) < 20


def test_kl_official_equals_torch_kl_div_of_log_softmax():
    torch = pytest.importorskip("torch")
    model, survey = np.array([5.0, 2, 1, 0]), np.array([1.0, 1, 3, 1])
    p, s = model / model.sum(), survey / survey.sum()
    expected = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(p), 0), torch.tensor(s))
    assert kl_official(model, survey) == pytest.approx(float(expected), rel=1e-9)
    # a zero survey bin contributes nothing (torch uses xlogy for the target)
    survey0 = np.array([1.0, 0, 3, 1])
    expected0 = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(p), 0),
                                           torch.tensor(survey0 / survey0.sum()))
    assert kl_official(model, survey0) == pytest.approx(float(expected0), rel=1e-9)


def test_js_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, size=5), rng.integers(0, 6, size=5)
        a[0] += 1
        b[1] += 1
        assert js_distance(a, b) == pytest.approx(float(jensenshannon(a / a.sum(), b / b.sum())))
    assert js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(math.sqrt(math.log(2)))


def test_individual_accuracy_skips_missing_real_answers_and_counts_safeguard_wrong():
    assert individual_accuracy([1, 2, None, 3], [1, 3, 2, None]) == pytest.approx(1 / 3)
    assert math.isnan(individual_accuracy([1], [None]))


def test_cultural_distinctiveness_on_a_3x3_matrix():
    m = np.array([[0.8, 0.5, 0.6],   # adapter of culture 0 on the tasks of cultures 0, 1, 2
                  [0.7, 0.4, 0.6],
                  [0.9, 0.5, 0.3]])
    c_dist, n = cultural_distinctiveness(m)
    assert n.tolist() == pytest.approx([0.8 / 0.9, 0.4 / 0.5, 0.3 / 0.6])
    assert c_dist == pytest.approx((0.8 / 0.9 + 0.8 + 0.5) / 3)
    with pytest.raises(ValueError, match="square"):
        cultural_distinctiveness(np.ones((2, 3)))


LABELS_4 = ("Very important", "Rather important", "Not very important", "Not at all important")


@pytest.mark.parametrize("text,low,high,labels,expected", [
    ("QUESTION: How important is family? ANSWER: 2", 1, 4, (), 2),
    ("ANSWER:\n\n  3\nbecause family matters", 1, 4, (), 3),
    ("ANSWER: 1. Very important", 1, 4, LABELS_4, 1),
    ("ANSWER: Option 2", 1, 4, (), 2),
    ("ANSWER: 4 - I think it is not important at all, as 2 would be too high", 1, 4, (), 4),
    ("ANSWER: 7", 1, 4, (), None),                       # out of range: safeguard
    ("ANSWER: 0", 1, 2, (), None),
    ("ANSWER: -1", 1, 4, (), None),
    ("ANSWER: 2.5", 1, 4, (), None),                     # not an option
    ("ANSWER: Not at all important.", 1, 4, LABELS_4, 4),  # the longest label wins
    ("ANSWER: rather important", 1, 4, LABELS_4, 2),
    ("ANSWER: Yes.", 1, 2, (), 1),
    ("ANSWER: No, I would not.", 1, 2, (), 2),
    ("ANSWER: Ja", 1, 2, (), 1),
    ("ANSWER: Nein", 1, 2, (), 2),
    ("ANSWER: Sí", 1, 2, (), 1),
    ("ANSWER：是的", 1, 2, (), 1),
    ("ANSWER: 不是", 1, 2, (), 2),
    ("ANSWER: はい", 1, 2, (), 1),
    ("ANSWER: いいえ", 1, 2, (), 2),
    ("ANSWER: Not mentioned", 1, 2, ("Mentioned", "Not mentioned"), 2),
    ("ANSWER: yes", 1, 4, (), None),                     # yes/no only for binary questions
    ("ANSWER:\n\n", 1, 4, (), None),
    ("", 1, 4, (), None),
    ("I cannot answer that.", 1, 4, (), None),
    ("ANSWER: 3\nANSWER: 1", 1, 4, (), 3),               # the first answer counts
    (" 2\nQUESTION: Is work important? ANSWER: 1", 1, 4, (), 2),  # invented questions ignored
    ("ANSWER:\n\n  ANSWER: 3", 1, 4, (), 3),
])
def test_parser_table(text, low, high, labels, expected):
    assert parse_answer(text, low, high, labels) == expected
