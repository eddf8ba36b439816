"""Survey metrics against hand-computed values and their reference definitions, and the answer
parser on tricky generations (docs/cultural-eval.md)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from jaxcult.eval.survey import (
    answered_accuracy,
    cultural_distinctiveness,
    histogram,
    individual_accuracy,
    js_distance,
    kl_official,
    kl_paper_direction,
)
from jaxcult.eval.survey_answers import parse_answer, parse_answer_official


def test_histogram_puts_unparsed_and_out_of_range_answers_in_the_safeguard_bin():
    counts = histogram([1, 2, 2, None, 5, 0, 4], 1, 4)
    assert counts.tolist() == [1, 2, 0, 1, 3]


def test_kl_in_the_paper_direction_over_the_options_by_hand():
    # options 1..2 then the safeguard bin, which this metric leaves out (parse failures are
    # reported on their own): 0.75 ln(0.75/0.25) + 0.25 ln(0.25/0.75)
    model, survey = np.array([3, 1, 0]), np.array([1, 3, 0])
    assert kl_paper_direction(model, survey) == pytest.approx(0.5 * math.log(3))
    assert kl_paper_direction(np.array([3, 1, 4]), survey) == pytest.approx(0.5 * math.log(3))
    assert kl_paper_direction(survey, survey) == 0.0
    # the survey never saw option 1: large but finite
    assert 10 < kl_paper_direction(np.array([1, 0, 0]), np.array([0, 1, 0])) < 20
    assert math.isnan(kl_paper_direction(np.array([0, 0, 5]), survey))  # never an option


def _official_kl(predicted: np.ndarray, oracle: np.ndarray) -> float:
    """The CLCA code's get_kl_div (evaluation/wvs_evaluation.py), rule for rule."""
    torch = pytest.importorskip("torch")
    o = torch.tensor(oracle, dtype=torch.float32)
    q = torch.tensor(predicted, dtype=torch.float32)
    o, q = o / o.sum(), q / q.sum()
    return float(torch.nn.functional.kl_div(torch.log_softmax(q.unsqueeze(0), dim=1),
                                            o.unsqueeze(0), reduction="batchmean"))


def test_kl_official_is_the_official_code_value_and_shrugs_off_parse_failures():
    rng = np.random.default_rng(3)
    for bins in (3, 5, 11):
        for _ in range(10):
            model = rng.integers(0, 50, size=bins).astype(float)
            survey = rng.integers(0, 50, size=bins).astype(float)
            model[0] += 1
            survey[1] += 1
            assert kl_official(model, survey) == pytest.approx(_official_kl(model, survey), rel=1e-5)
    # 5 bins: the value is the sum over bins, 5x what a mean over them gives
    model, survey = np.array([40.0, 30, 20, 10, 0]), np.array([5.0, 10, 20, 65, 0])
    assert kl_official(model, survey) == pytest.approx(_official_kl(model, survey), rel=1e-5)
    # 1,000 personas with 0 / 10 / 50 parse failures: the official value hardly moves, the
    # paper-direction value (options only) not at all
    base = np.array([300.0, 400, 200, 100])
    values = []
    for failures in (0, 10, 50):
        model = np.append(base * (1000 - failures) / 1000, failures)
        values.append((kl_official(model, np.append(base[::-1], 0)),
                       kl_paper_direction(model, np.append(base[::-1], 0))))
    assert max(v[0] for v in values) - min(v[0] for v in values) < 0.02
    assert values[0][1] == pytest.approx(values[2][1])


def test_js_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, size=5), rng.integers(0, 6, size=5)
        a[0] += 1
        b[1] += 1
        assert js_distance(a, b) == pytest.approx(float(jensenshannon(a / a.sum(), b / b.sum())))
    assert js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(math.sqrt(math.log(2)))


def _official_person_scores(real: list[list[float]], model: list[list[int]]) -> float:
    """The CLCA code's get_person_answer_score per persona (a missing real answer is NaN, a
    parse failure -1), then sum(total) / len(total)."""
    total = []
    for row, answers in zip(real, model):
        correct = sum(1 for qid, answer in enumerate(answers) if row[qid] == float(answer))
        total.append(correct / len(answers))
    return sum(total) / len(total)


def test_individual_accuracy_is_the_official_per_persona_mean():
    nan = float("nan")
    real = [[1, 2, nan], [2, 3, 1], [nan, 4, 1]]
    model = [[1, 2, 3], [2, -1, 1], [4, 4, 4]]
    ours = individual_accuracy([[a if a != -1 else None for a in answers] for answers in model],
                               [[None if math.isnan(a) else a for a in row] for row in real])
    official = _official_person_scores(real, model)
    assert official == pytest.approx(5 / 9) and ours == pytest.approx(official)
    # jaxcult's earlier number, still reported: pooled, missing real answers left out
    pooled = answered_accuracy([1, 2, 3, 2, None, 1, 4, 4, 4], [1, 2, None, 2, 3, 1, None, 4, 1])
    assert pooled == pytest.approx(5 / 7)
    assert math.isnan(answered_accuracy([1], [None]))


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


_OFFICIAL_WORDS = {"good": 1, "bad": 3, "yes": 1, "no": 2, "nein": 2, "sehr wichtig": 1,
                   "很重要": 2, "nada importante": 4, "stimme überhaupt nicht zu": "top"}


def _official_parse(answer: str, low: int, high: int) -> int:
    """The CLCA code's parse_answer as a simulation (its word table cut to what the cases
    below use): -1 is its safeguard."""
    raw = answer.split("ANSWER:")[-1].replace("assistant", "").replace(".", "").strip()
    raw = raw.split("\n")[0].replace("I think the answer is", "").strip()
    if raw.isnumeric() and low <= int(raw) <= high:
        return int(raw)
    ans = re.split("[:：]", raw.lower())[-1]
    for junk in ["。", "**", "la respuesta es", "宗教", "ich bi", "die antwort ist"]:
        ans = ans.replace(junk, "")
    ans = ans.split("(")[0].strip()
    if ans.isnumeric():
        return int(ans) if low <= int(ans) <= high else -1
    code = _OFFICIAL_WORDS.get(ans, ans)
    if not code:
        return -1
    if code == "top":
        return high
    if isinstance(code, int):
        return code if code <= high else -1  # high + 1 is its safeguard slot
    jp = re.match(r"([0-9])\s(在1到|1表示|1 は|から).*", code)
    if jp and jp.group(1).isdigit():
        return int(jp.group(1)) if low <= int(jp.group(1)) <= high else -1
    return -1


@pytest.mark.parametrize("text", [
    "3", " 2.\nBecause...", "ANSWER: 4", "I think the answer is 2", "2 - Rather important",
    "Rather important", "I would say 3", "No", "bad", "Bad.", "Sehr wichtig", "Antwort: 3",
    "Answer: nein", "3 (Not very important)", "**2**", "9", "", "3 在1到4之间", "5 から", "Yes!",
    "very important", "Stimme überhaupt nicht zu", "很重要", "Nada importante", "assistant 1",
])
def test_official_parsing_reads_what_the_official_code_reads(text):
    for low, high in ((1, 4), (1, 2), (1, 10)):
        found = parse_answer_official(text, low, high)
        assert (found if found is not None else -1) == _official_parse(text, low, high), (low, high)


def test_official_and_lenient_parsing_differ_where_the_issue_says():
    for text in ("2 - Rather important", "I would say 3"):
        assert parse_answer_official(text, 1, 4) is None and parse_answer(text, 1, 4) is not None
    assert parse_answer_official("Rather important", 1, 4) is None
    assert parse_answer(text="Rather important", low=1, high=4,
                        labels=["Very important", "Rather important", "Not very important",
                                "Not at all important"]) == 2
    assert parse_answer_official("No", 1, 4) == 2 and parse_answer("No", 1, 4) is None
    assert parse_answer_official("bad", 1, 4) == 3 and parse_answer("bad", 1, 4) is None
