"""Culture descriptions for CLCA role-play: Hofstede's six dimensions and the two
Inglehart–Welzel dimensions of a culture, verbalised as the paper does ("highly hierarchical,
moderately collective, ...", "little survival values, moderately secular").

The built-in cultures live in `cultures.yaml` beside this module; a user file of the same
layout adds cultures or replaces built-in ones. Verbalisation of a Hofstede score s (0..100):
s >= 70 "highly <high pole>", 50 <= s < 70 "moderately <high pole>", 30 <= s < 50 "moderately
<low pole>", s < 30 "highly <low pole>" (the thresholds reproduce the paper's China example).
An Inglehart–Welzel coordinate v: |v| < 0.5 "little", < 1.2 "moderately", else "highly",
with the pole given by the sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from jaxcult.errors import UserError

BUILT_IN = Path(__file__).with_name("cultures.yaml")

HOFSTEDE_POLES = {  # dimension: (low pole, high pole)
    "power_distance": ("egalitarian", "hierarchical"),
    "individualism": ("collective", "individualistic"),
    "masculinity": ("feminine", "masculine"),
    "uncertainty_avoidance": ("tolerant of uncertainty", "uncertainty avoiding"),
    "long_term_orientation": ("short-term oriented", "long-term oriented"),
    "indulgence": ("restrained", "indulgent"),
}
INGLEHART_WELZEL_POLES = {  # dimension: (negative pole, positive pole)
    "self_expression": ("survival values", "self-expression values"),
    "secular": ("traditional", "secular"),
}


@dataclass(frozen=True)
class Culture:
    key: str                 # "uk"
    adjective: str           # "British"
    country: str             # "the United Kingdom"
    names: tuple[str, ...]   # words that mention the culture
    description: str         # the verbalised dimensions


def hofstede_phrase(dimension: str, score: float) -> str:
    low, high = HOFSTEDE_POLES[dimension]
    if score >= 70:
        return f"highly {high}"
    if score >= 50:
        return f"moderately {high}"
    return f"moderately {low}" if score >= 30 else f"highly {low}"


def inglehart_welzel_phrase(dimension: str, value: float) -> str:
    negative, positive = INGLEHART_WELZEL_POLES[dimension]
    level = "little" if abs(value) < 0.5 else "moderately" if abs(value) < 1.2 else "highly"
    return f"{level} {positive if value >= 0 else negative}"


def verbalise(country: str, hofstede: dict[str, float], inglehart_welzel: dict[str, float]) -> str:
    traits = ", ".join(hofstede_phrase(d, hofstede[d]) for d in HOFSTEDE_POLES)
    values = ", ".join(inglehart_welzel_phrase(d, inglehart_welzel[d])
                       for d in INGLEHART_WELZEL_POLES)
    return (f"The culture of {country} is {traits}. On the Inglehart–Welzel cultural map it "
            f"holds {values}.")


def _scores(entry: dict, field: str, names, where: str) -> dict[str, float]:
    scores = entry.get(field)
    if not isinstance(scores, dict):
        raise UserError(f"{where}: expected a mapping {field!r} with {', '.join(names)}")
    missing = [n for n in names if not isinstance(scores.get(n), int | float)]
    if missing:
        raise UserError(f"{where}: {field}: missing or non-numeric {', '.join(missing)}")
    return {n: float(scores[n]) for n in names}


def _culture(key: str, entry, where: str) -> Culture:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping (adjective, country, names, hofstede, ...)")
    for field in ("adjective", "country"):
        if not isinstance(entry.get(field), str) or not entry[field].strip():
            raise UserError(f"{where}: missing text field {field!r}")
    names = entry.get("names", [entry["adjective"]])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{where}: names: expected a list of words")
    description = entry.get("description")
    if description is None:
        description = verbalise(entry["country"],
                                _scores(entry, "hofstede", HOFSTEDE_POLES, where),
                                _scores(entry, "inglehart_welzel", INGLEHART_WELZEL_POLES, where))
    elif not isinstance(description, str) or not description.strip():
        raise UserError(f"{where}: description: expected text")
    return Culture(key, entry["adjective"], entry["country"], tuple(names), description)


def _read(path: Path) -> dict[str, Culture]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: culture file not found") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: invalid YAML ({error})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a mapping of culture keys to descriptions")
    return {str(key).lower(): _culture(str(key).lower(), entry, f"{path}: {key}")
            for key, entry in data.items()}


def load_cultures(extra: Path | None = None) -> dict[str, Culture]:
    """The built-in cultures, updated with those of `extra` (a file of the same layout)."""
    cultures = _read(BUILT_IN)
    if extra is not None:
        cultures.update(_read(extra))
    return cultures


def find_culture(cultures: dict[str, Culture], name: str, where: str) -> Culture:
    """The culture a scenario or config names by key, adjective or country ("UK", "British")."""
    wanted = name.strip().lower()
    for culture in cultures.values():
        if wanted in (culture.key, culture.adjective.lower(), culture.country.lower(),
                      culture.country.lower().removeprefix("the ")):
            return culture
    raise UserError(f"{where}: unknown culture {name!r} (known: {', '.join(sorted(cultures))}; "
                    f"add it with clca.cultures_file)")
