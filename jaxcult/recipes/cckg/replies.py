"""Assertions out of a teacher model's reply: JSON when it is JSON, repaired when it is close.

A generation reply should be a JSON array of {action, knowledge, relation_type, result}; an
expansion reply an object {intermediate_steps: [...], next_steps: [...]} of {action,
knowledge, relation_type, event}. Models break JSON in a few typical ways: prose around it,
single quotes, trailing commas, unquoted keys, a cut-off last object. The parser takes the
outermost JSON block; if that fails it repairs each `{...}` object on its own (the typical
faults above), and as a last resort reads `key: value` pairs. Objects without every required
field, or with a relation outside the five, are dropped and counted; the caller keeps the raw
reply of any reply that gave nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from jaxcult.recipes.cckg.graph import RELATIONS

GENERATION_FIELDS = ("action", "knowledge", "relation_type", "result")
EXPANSION_FIELDS = ("action", "knowledge", "relation_type", "event")
EXPANSION_KEYS = ("intermediate_steps", "next_steps")

_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_BARE_KEY = re.compile(r"([{,]\s*)([A-Za-z_]+)\s*:")
_PAIR = re.compile(r"[\"']?\b(action|knowledge|relation_type|result|event)\b[\"']?\s*:\s*"
                   r"[\"']?(.*?)[\"']?\s*(?=,\s*[\"']?\b(?:action|knowledge|relation_type|result"
                   r"|event)\b|\}|$)", re.DOTALL)


@dataclass
class Parsed:
    records: list[dict] = field(default_factory=list)
    repaired: int = 0                  # objects read only after a repair
    dropped: dict[str, int] = field(default_factory=dict)   # reason -> objects

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _loads(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def repair_object(text: str) -> dict | None:
    """One `{...}` object, repaired if it must be (None if nothing can be read)."""
    found = _loads(text)
    if isinstance(found, dict):
        return found
    fixed = _TRAILING_COMMA.sub(r"\1", text)
    fixed = _BARE_KEY.sub(r'\1"\2":', fixed)
    for candidate in (fixed, re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", '"', fixed)):
        found = _loads(candidate)
        if isinstance(found, dict):
            return found
    pairs = {key: value.strip().rstrip(",").strip().strip("\"'")
             for key, value in _PAIR.findall(text)}
    return pairs or None


def _block(text: str, opening: str, closing: str) -> str | None:
    start, end = text.find(opening), text.rfind(closing)
    return text[start:end + 1] if start != -1 and end > start else None


def _objects(text: str, parsed: Parsed) -> list[dict]:
    """Every object in `text`, each repaired on its own; an unclosed last one too."""
    found = []
    pieces = _OBJECT.findall(text)
    tail = text[text.rfind("}") + 1:] if "}" in text else text
    if "{" in tail:                       # a reply cut off inside its last object
        pieces.append(tail[tail.rfind("{"):] + "}")
    for piece in pieces:
        value = repair_object(piece)
        if value is None:
            parsed.drop("unreadable object")
            continue
        if _loads(piece) is None:
            parsed.repaired += 1
        found.append(value)
    return found


def _checked(objects: list, fields: tuple[str, ...], parsed: Parsed) -> list[dict]:
    records = []
    for value in objects:
        if not isinstance(value, dict):
            parsed.drop("not an object")
        elif not all(isinstance(value.get(f), str) and value[f].strip() for f in fields):
            parsed.drop("missing field")
        elif value["relation_type"].strip() not in RELATIONS:
            parsed.drop("unknown relation")
        else:
            records.append({f: value[f].strip() for f in fields})
    return records


def parse_generation(reply: str) -> Parsed:
    """Assertions of a generation reply (a JSON array of objects)."""
    parsed = Parsed()
    block = _block(reply, "[", "]")
    whole = _loads(block) if block else None
    objects = whole if isinstance(whole, list) else _objects(reply, parsed)
    parsed.records = _checked(objects, GENERATION_FIELDS, parsed)
    return parsed


def parse_expansion(reply: str) -> tuple[Parsed, Parsed]:
    """(intermediate steps, next steps) of an expansion reply."""
    steps = {key: Parsed() for key in EXPANSION_KEYS}
    whole = _loads(_block(reply, "{", "}") or "")
    for key, parsed in steps.items():
        if isinstance(whole, dict) and isinstance(whole.get(key), list):
            objects = whole[key]
        else:
            match = re.search(rf"{key}[\"']?\s*:\s*\[", reply)
            if match is None:
                continue
            rest = reply[match.end():]
            other = [reply.find(k, match.end()) for k in EXPANSION_KEYS if k != key]
            end = min([o - match.end() for o in other if o != -1] or [len(rest)])
            objects = _objects(rest[:end], parsed)
        parsed.records = _checked(objects, EXPANSION_FIELDS, parsed)
    return steps["intermediate_steps"], steps["next_steps"]
