"""Reading a survey answer out of generated text (CLCA's generate mode).

The prompt ends with "ANSWER:"; the first non-empty line of the completion is read as an integer
option in [low, high]. Failing that, the line is matched against the question's option labels (longest label
first, so "Not at all important" wins over "important") and a multilingual yes/no map; anything
else is None — the safeguard bin, counted wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# yes -> 1, no -> 2: the WVS coding of its binary questions (Q7-Q17 "mentioned / not mentioned"
# use 1 / 2 as well), in the prompt languages jaxcult ships (en, de, es, zh, ja) and a few more.
YES_NO = {
    1: ("yes", "ja", "sí", "si", "oui", "是", "是的", "对", "はい", "да", "mentioned"),
    2: ("no", "nein", "non", "否", "不是", "不", "いいえ", "нет", "not mentioned"),
}
_INTEGER = re.compile(r"(?<![\d.])-?\d+(?![\d]|\.\d)")  # "2." is 2; "2.5" is not an integer
_MARKER = re.compile(r"answer\s*[:：]", re.IGNORECASE)


def answer_line(text: str) -> str:
    """The first non-empty line of a completion (what follows the prompt's "ANSWER:"); when the
    model repeated the marker on that line, what follows the marker (a later line, e.g. a
    question the model goes on to invent and answer, is never read)."""
    for line in text.splitlines():
        if (marker := _MARKER.search(line)) is not None:
            line = line[marker.end():]
        if line.strip():
            return line.strip()
    return ""


def _words(line: str) -> str:
    return " " + re.sub(r"[^\w]+", " ", line.lower()).strip() + " "


def _label_match(line: str, labels: Sequence[tuple[int, str]]) -> int | None:
    words = _words(line)
    for value, label in sorted(labels, key=lambda item: -len(item[1])):
        if _words(label) != "  " and _words(label) in words:
            return value
    return None


def parse_answer(text: str, low: int, high: int, labels: Sequence[str] = ()) -> int | None:
    """The option a generated answer names, or None (the safeguard bin).

    `labels[i]` is the label of option `low + i` (e.g. "Very important"); an integer outside
    [low, high] is not an option, so the labels and the yes/no map are tried next.
    """
    line = answer_line(text)
    for found in _INTEGER.finditer(line):
        value = int(found.group())
        if low <= value <= high:
            return value
        break  # the first number is the answer; a wrong one is not rescued by a later one
    labelled = [(low + i, label) for i, label in enumerate(labels)]
    if (value := _label_match(line, labelled)) is not None:
        return value
    if high - low == 1:  # binary questions: yes -> low, no -> high
        words = _words(line)
        for value, names in ((low + 1, YES_NO[2]), (low, YES_NO[1])):  # "not mentioned" first
            if any(_words(name) in words for name in names):
                return value
        if any(ch in line for ch in ("是", "はい")) and not any(ch in line for ch in ("不", "否")):
            return low
    return None
