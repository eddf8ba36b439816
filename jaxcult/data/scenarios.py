"""CLCA role-play scenarios: who talks with whom, where, and what each wants.

One JSONL record per scenario: `{"culture", "persona": "Name1 and Name2", "setting",
"person1": {"name", "background", "occupation", "goal", "secrets"}, "person2": {...}}` plus an
optional `"id"` (default `<file stem>-<line>`). person1 opens the conversation (the inquirer),
person2 answers (the responder). A malformed record is an error naming the file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError

PERSON_FIELDS = ("name", "background", "occupation", "goal", "secrets")


@dataclass(frozen=True)
class Person:
    name: str
    background: str
    occupation: str
    goal: str
    secrets: str


@dataclass(frozen=True)
class Scenario:
    id: str
    culture: str
    setting: str
    person1: Person   # the inquirer: speaks first
    person2: Person   # the responder

    @property
    def persona(self) -> str:
        return f"{self.person1.name} and {self.person2.name}"


def _text(record: dict, key: str, where: str, *, empty: bool = False) -> str:
    value = record.get(key)
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise UserError(f"{where}: expected a {'' if empty else 'non-empty '}text field {key!r}")
    return value.strip()


def _person(record: dict, key: str, where: str) -> Person:
    person = record.get(key)
    if not isinstance(person, dict):
        raise UserError(f"{where}: expected an object {key!r} with {', '.join(PERSON_FIELDS)}")
    return Person(*(_text(person, field, f"{where}: {key}", empty=field == "secrets")
                    for field in PERSON_FIELDS))


def parse_scenario(record, where: str, default_id: str) -> Scenario:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(record).__name__}")
    person1, person2 = _person(record, "person1", where), _person(record, "person2", where)
    persona = _text(record, "persona", where)
    names = [n.strip() for n in persona.split(" and ")]
    if names != [person1.name, person2.name]:
        raise UserError(f"{where}: persona {persona!r} must be \"{person1.name} and "
                        f"{person2.name}\" (person1's and person2's names)")
    identifier = record.get("id", default_id)
    if not isinstance(identifier, str) or not identifier:
        raise UserError(f"{where}: 'id' must be non-empty text")
    return Scenario(identifier, _text(record, "culture", where), _text(record, "setting", where),
                    person1, person2)


def read_scenarios(path: Path) -> list[Scenario]:
    """Every scenario of a JSONL file; ids must be unique within it."""
    scenarios = read_checked_jsonl(path, lambda record, where: parse_scenario(
        record, where, f"{path.stem}-{where.rsplit(':', 1)[-1]}"))
    seen: set[str] = set()
    for scenario in scenarios:
        if scenario.id in seen:
            raise UserError(f"{path}: scenario id {scenario.id!r} appears twice")
        seen.add(scenario.id)
    return scenarios
