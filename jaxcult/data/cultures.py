"""Culture descriptions for CLCA role-play: Hofstede's six dimensions and the two
Inglehart–Welzel dimensions of a culture, verbalised as the paper's agent prompts carry them
(Tables 17/18: "highly hierarchical, moderately collective, ...", "little survival values,
moderately secular").

The built-in cultures live in `cultures.yaml` beside this module; a user file of the same
layout adds cultures or replaces built-in ones. A dimension is given either as a phrase,
"<degree> <pole>" from the vocabulary below (the built-ins state the paper's levels this way), or
as a number read with fixed thresholds: a Hofstede score s (0..100) is "highly <high pole>" at
s >= 70, "moderately <high pole>" at 50 <= s < 70, "moderately <low pole>" at 30 <= s < 50 and
"highly <low pole>" below; an Inglehart–Welzel coordinate v takes the pole of its sign and the
first, second or third degree word at |v| < 0.5, < 1.2 and above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from jaxcult.errors import UserError

BUILT_IN = Path(__file__).with_name("cultures.yaml")

HOFSTEDE_POLES = {  # dimension: (low pole, high pole); degrees "moderately", "highly"
    "power_distance": ("egalitarian", "hierarchical"),
    "individualism": ("collectivist", "individualistic"),
    "masculinity": ("care-oriented", "achievement-driven"),
    "uncertainty_avoidance": ("risk-taking", "uncertainty-avoiding"),
    "long_term_orientation": ("normative", "pragmatic"),
    "indulgence": ("restrained", "indulgent"),
}
HOFSTEDE_DEGREES = ("moderately", "highly")
INGLEHART_WELZEL_POLES = {  # dimension: ((negative pole, positive pole), three degree words)
    "self_expression": (("survival values", "self-expression values"),
                        ("little", "moderate", "strong")),
    "secular": (("traditional", "secular"), ("slightly", "moderately", "strongly")),
}


@dataclass(frozen=True)
class Culture:
    key: str                 # "uk"
    adjective: str           # "British"
    country: str             # "the United Kingdom"
    names: tuple[str, ...]   # words that mention the culture
    description: str         # the verbalised dimensions, one line per model


def hofstede_phrase(dimension: str, score: float) -> str:
    low, high = HOFSTEDE_POLES[dimension]
    if score >= 70:
        return f"highly {high}"
    if score >= 50:
        return f"moderately {high}"
    return f"moderately {low}" if score >= 30 else f"highly {low}"


def inglehart_welzel_phrase(dimension: str, value: float) -> str:
    (negative, positive), degrees = INGLEHART_WELZEL_POLES[dimension]
    degree = degrees[0] if abs(value) < 0.5 else degrees[1] if abs(value) < 1.2 else degrees[2]
    return f"{degree} {positive if value >= 0 else negative}"


def phrases(dimension: str) -> list[str]:
    """Every phrase a dimension may be stated with."""
    if dimension in HOFSTEDE_POLES:
        return [f"{d} {p}" for p in HOFSTEDE_POLES[dimension] for d in HOFSTEDE_DEGREES]
    poles, degrees = INGLEHART_WELZEL_POLES[dimension]
    return [f"{d} {p}" for p in poles for d in degrees]


def verbalise(hofstede: dict[str, str], inglehart_welzel: dict[str, str]) -> str:
    """The two dimension lines of an agent prompt, from each dimension's phrase."""
    return (f"Inglehart–Welzel dimensions: "
            f"{', '.join(inglehart_welzel[d] for d in INGLEHART_WELZEL_POLES)}\n"
            f"Hofstede dimensions: {', '.join(hofstede[d] for d in HOFSTEDE_POLES)}")


def _phrases(entry: dict, field: str, dimensions, to_phrase, where: str) -> dict[str, str]:
    given = entry.get(field)
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected a mapping {field!r} with {', '.join(dimensions)}")
    out = {}
    for dimension in dimensions:
        value = given.get(dimension)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[dimension] = to_phrase(dimension, float(value))
        elif isinstance(value, str) and value.strip() in phrases(dimension):
            out[dimension] = value.strip()
        else:
            raise UserError(f"{where}: {field}: {dimension}: expected a number or one of "
                            f"{', '.join(phrases(dimension))}; found {value!r}")
    unknown = sorted(set(given) - set(dimensions))
    if unknown:
        raise UserError(f"{where}: {field}: unknown dimension {unknown[0]!r} (known: "
                        f"{', '.join(dimensions)})")
    return out


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
        description = verbalise(
            _phrases(entry, "hofstede", HOFSTEDE_POLES, hofstede_phrase, where),
            _phrases(entry, "inglehart_welzel", INGLEHART_WELZEL_POLES, inglehart_welzel_phrase,
                     where))
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
