"""Reading a survey answer out of generated text (CLCA's generate mode), by two rules.

`parse_answer` (lenient, `--parsing lenient`): the first non-empty line of the completion (the
prompt ends with "ANSWER:") is read as an integer option in [low, high]; failing that, the line
is matched against the question's option labels (longest label first, so "Not at all important"
wins over "important") and, for binary questions, a multilingual yes/no map.

`parse_answer_official` (`--parsing official`, the paper's protocol): the CLCA code's rule — the
whole first line after the last "ANSWER:" must be a number in range, or its part after the last
colon (before any parenthesis) a number or one of a fixed set of verbal answers; "2 - Rather
important", "Rather important" and "I would say 3" are parse failures there.

Either way anything else is None — the safeguard bin, counted wrong.
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


# The CLCA code's verbal answers (its facts, regrouped): what each phrase counts as. TOP is the
# question's highest option ("strongly disagree" on 4- and 5-point scales alike).
TOP = "top"
OFFICIAL_VERBAL = {
    1: ("good", "gut", "bueno", "好", "良い", "yes", "ja", "si", "是", "はい", "1 是", "1 ja",
        "1 sí", "非常同意", "強く賛成", "強烈に賛成", "stimme voll zu", "totalmente de acuerdo",
        "sehr wichtig", "非常に重要", "非常重要", "非常非常重要", "非常 important", "muy importante"),
    2: ("no", "no 2", "否", "いいえ", "nein", "de acuerdo", "很重要"),
    3: ("bad", "schlecht", "malo", "坏", "悪い"),
    4: ("反对", "en desacuerdo", "überhaupt nicht wichtig", "全く重要ではない", "一点也不重要",
        "非常不重要", "nada importante"),
    TOP: ("非常不同意", "very不同意", "強く反対", "stimme überhaupt nicht zu",
          "totalmente en desacuerdo"),
}
_VERBAL = {phrase: code for code, phrases in OFFICIAL_VERBAL.items() for phrase in phrases}
_DROPPED = ("。", "**", "la respuesta es", "宗教", "ich bi", "die antwort ist")
_DIGIT_THEN_SCALE = re.compile(r"([0-9])\s(在1到|1表示|1 は|から)")  # "3 在1到4..." and kin


def _in_range(text: str, low: int, high: int) -> int | None:
    try:
        value = int(float(text))
    except ValueError:  # str.isnumeric also admits characters such as "五"
        return None
    return value if low <= value <= high else None


def parse_answer_official(text: str, low: int, high: int) -> int | None:
    """The option the CLCA code reads from a generated answer, or None (see the module
    docstring). A verbal answer whose code is outside [low, high] is None (the official code
    counts it in the safeguard bin, or fails)."""
    line = text.split("ANSWER:")[-1].replace("assistant", "").replace(".", "").strip()
    line = line.split("\n")[0].replace("I think the answer is", "").strip()
    if line.isnumeric() and (value := _in_range(line, low, high)) is not None:
        return value
    tail = re.split(r"[:：]", line.lower())[-1]
    for phrase in _DROPPED:
        tail = tail.replace(phrase, "")
    tail = tail.split("(")[0].strip()
    if tail.isnumeric():
        return _in_range(tail, low, high)
    code = _VERBAL.get(tail)
    if code is not None:
        code = high if code == TOP else code
        return code if low <= code <= high else None
    found = _DIGIT_THEN_SCALE.match(tail)
    return _in_range(found.group(1), low, high) if found else None
