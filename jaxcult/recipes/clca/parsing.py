"""Reading the model's answers of every CLCA stage; a malformed answer parses to None (the
caller records it), never to a guess.

- role-play: `ACTION: <type>` then `OUTPUT: <text>` (either may share a line); the action type
  is its choice number or its name, normalised ("3", "2. non-verbal", "Speak.", "**leave**");
  speak and non-verbal need an output, and an output of NONE is empty;
- judges: the judge's field (`Quality:`, `Culture alignment:`, `Meta label:`) and
  `Confidence:`, each a choice number or its words (confidence also as a percentage), and the
  meta judge's `Critique:`;
- intents: the text after `INTENT:` up to the first blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jaxcult.recipes.clca.config import CONFIDENCE_LEVELS, JUDGE_FIELDS, JUDGE_LABELS
from jaxcult.recipes.clca.prompts import ACTIONS

_ACTION = re.compile(r"ACTION\s*:\s*(?P<action>.*?)\s*(?=OUTPUT\s*:|\n|$)", re.I)
_OUTPUT = re.compile(r"OUTPUT\s*:\s*(?P<output>.*?)\s*(?=\n\s*ACTION\s*:|$)", re.I | re.S)
_FIELD = "{}\\s*:\\s*(?P<value>[^\\n]*)"


@dataclass(frozen=True)
class Action:
    action: str   # one of ACTIONS
    text: str


def normalise_action(raw: str) -> str | None:
    number = re.match(r"\W*([1-4])\b", raw)
    if number:
        return ACTIONS[int(number.group(1)) - 1]
    word = re.sub(r"[^a-z ]+", " ", raw.lower()).split()
    joined = " ".join(word)
    if not word:
        return None
    if joined.startswith(("non verbal", "nonverbal")):
        return "non-verbal communication"
    return {"speak": "speak", "leave": "leave", "none": "none"}.get(word[0])


def _clean_output(text: str, name: str | None) -> str:
    text = text.strip()
    if name and text.lower().startswith(name.lower() + ":"):
        text = text[len(name) + 1:].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return "" if text.strip(".").upper() == "NONE" else text


def parse_action(text: str, name: str | None = None) -> Action | None:
    """The first `ACTION:`/`OUTPUT:` pair of a role-play answer, or None when malformed."""
    found = _ACTION.search(text)
    if found is None:
        return None
    action = normalise_action(found.group("action"))
    if action is None:
        return None
    output = _OUTPUT.search(text, found.start())
    said = _clean_output(output.group("output"), name) if output else ""
    if action in ("speak", "non-verbal communication") and not said:
        return None
    return Action(action, said if action != "none" else "")


@dataclass(frozen=True)
class Verdict:
    verdict: str | None      # the judge's label, normalised; None = unparseable
    confidence: str | None   # one of CONFIDENCE_LEVELS; None = missing
    critique: str = ""
    raw: str = ""

    def describe(self) -> str:
        if self.verdict is None:
            return "no verdict (the evaluation was unreadable)"
        return f"{self.verdict} ({self.confidence or 'confidence not given'})"


def _field(text: str, name: str) -> str | None:
    found = re.search(_FIELD.format(name), text, re.I)
    return found.group("value").strip().strip("*<>[]. ") if found else None


def _choice(value: str, choices: tuple[str, ...]) -> str | None:
    number = re.match(r"\W*(\d+)\b", value)
    if number is None:
        return None
    index = int(number.group(1)) - 1
    return choices[index] if 0 <= index < len(choices) else None


def normalise_confidence(raw: str) -> str | None:
    value = raw.lower()
    share = re.search(r"(\d+(?:\.\d+)?)\s*%", value) or re.fullmatch(r"\s*(0?\.\d+)\s*", value)
    if share:
        fraction = float(share.group(1)) / (100 if "%" in value else 1)
        return ("very confident" if fraction >= 0.9 else "confident" if fraction >= 0.7 else
                "not sure")
    chosen = _choice(value, CONFIDENCE_LEVELS)
    if chosen is not None or re.match(r"\W*\d", value):
        return chosen
    if re.search(r"\bnot\b|unsure|uncertain|unconfident", value):
        return "not sure"
    if "very" in value or "highly" in value or "extremely" in value:
        return "very confident"
    return "confident" if "confident" in value or "certain" in value else None


def normalise_verdict(raw: str, labels: tuple[str, str]) -> str | None:
    """`labels` = (choice 1, choice 2), e.g. ("good", "bad") or ("aligned", "not aligned")."""
    if re.match(r"\W*\d", raw):
        return _choice(raw, labels)
    value = re.sub(r"[^a-z ]+", " ", raw.lower()).strip()
    positive, negative = labels
    if value.startswith(negative) or (negative.startswith("not ") and re.match(
            r"(not|misaligned|unaligned|non aligned)\b", value)):
        return negative
    return positive if value.startswith(positive) else None


def parse_verdict(text: str, kind: str) -> Verdict:
    """The answer of the `kind` judge (quality, culture or meta)."""
    raw_verdict = _field(text, JUDGE_FIELDS[kind])
    verdict = normalise_verdict(raw_verdict, JUDGE_LABELS[kind]) if raw_verdict else None
    raw_confidence = _field(text, "Confidence")
    confidence = normalise_confidence(raw_confidence) if raw_confidence else None
    said = ""
    if kind == "meta":
        found = re.search(r"Criti(?:c|que)\s*:\s*(.*)", text, re.I | re.S)
        said = found.group(1).strip() if found else ""
    return Verdict(verdict, confidence, said, text)


def parse_intent(text: str) -> str | None:
    """The intent after `INTENT:` (up to a blank line), or None when there is none."""
    parts = re.split(r"INTENT\s*:", text, maxsplit=1, flags=re.I)
    if len(parts) < 2:
        return None
    intent = re.split(r"\n\s*\n", parts[1].strip(), maxsplit=1)[0].strip()
    return intent or None
