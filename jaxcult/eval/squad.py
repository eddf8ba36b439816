"""Extractive-QA scores: SQuAD v1.1's official F1 / exact match, and MLQA's per-language variant.

`lang=None` is the SQuAD v1.1 definition (lowercase, strip ASCII punctuation and English
articles, whitespace tokens). With a language code, MLQA's rules apply: all Unicode punctuation
is removed, articles are removed per language, and Chinese is segmented per character (runs of
non-CJK characters stay whitespace-tokenised). Scores are percentages, maximised over the gold
answers of each question, averaged over all references (a missing prediction scores 0).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from jaxcult.errors import UserError

_UNICODE_PUNCT = frozenset(
    chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
) | frozenset(string.punctuation)
_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
    "hi": None,
    "zh": None,
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese tokenisation: each CJK character and punctuation mark is a token."""
    tokens, run = [], ""
    for char in text:
        if _CJK.search(char) or char in _UNICODE_PUNCT:
            tokens.extend(run.split())
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(run.split())
    return tokens


def normalize_answer(text: str, lang: str | None = None) -> str:
    if lang is not None and lang not in _ARTICLES:
        raise UserError(f"squad_scores: no MLQA normalisation for language {lang!r} "
                        f"(known: {', '.join(_ARTICLES)})")
    punct = _ASCII_PUNCT if lang is None else _UNICODE_PUNCT
    text = "".join(ch for ch in text.lower() if ch not in punct)
    articles = _ARTICLES["en"] if lang is None else _ARTICLES[lang]
    if articles:
        text = re.sub(articles, " ", text)
    tokens = mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def normalize_fun_zh(text: str) -> str:
    """The FUN code's Chinese rule (its `utils/squad/evaluate.py`): lowercase, drop ASCII
    punctuation, then split CJK characters and any remaining (Unicode) punctuation mark into
    tokens; no article removal."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCT)
    return " ".join(t for t in mixed_segmentation(text) if t.strip())


RULES = ("squad", "mlqa", "fun_official")


def normalizer(rules: str, lang: str | None) -> Callable[[str], str]:
    """`squad`: SQuAD v1.1 for every language; `mlqa`: MLQA's per-language rules; `fun_official`:
    SQuAD v1.1 except Chinese, scored character by character as the FUN code did."""
    if rules == "mlqa":
        return lambda text: normalize_answer(text, lang)
    if rules == "fun_official" and lang == "zh":
        return normalize_fun_zh
    if rules not in RULES:
        raise UserError(f"squad_scores: unknown rules {rules!r} (known: {', '.join(RULES)})")
    return normalize_answer


def _f1(prediction: str, truth: str, normalize: Callable[[str], str]) -> float:
    pred, gold = normalize(prediction).split(), normalize(truth).split()
    common = Counter(pred) & Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def _exact(prediction: str, truth: str, normalize: Callable[[str], str]) -> float:
    return float(normalize(prediction) == normalize(truth))


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                 lang: str | None = None, rules: str | None = None) -> dict[str, float]:
    """{"f1", "exact_match"} in percent over every reference question id. `rules` default:
    MLQA's when a language is given, else SQuAD v1.1's."""
    normalize = normalizer(rules or ("mlqa" if lang is not None else "squad"), lang)
    if not references:
        raise UserError("squad_scores: no references")
    f1 = exact = 0.0
    for qid, answers in references.items():
        if isinstance(answers, str):
            answers = [answers]
        if not answers:
            raise UserError(f"squad_scores: question {qid!r} has no gold answer")
        if qid not in predictions:
            continue
        f1 += max(_f1(predictions[qid], a, normalize) for a in answers)
        exact += max(_exact(predictions[qid], a, normalize) for a in answers)
    n = len(references)
    return {"f1": 100.0 * f1 / n, "exact_match": 100.0 * exact / n}
