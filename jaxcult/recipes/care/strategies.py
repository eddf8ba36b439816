"""Prompting strategies: how the supporter model is asked to reply to a distress post.

A strategy is a system turn and a user turn, each a template over the fields below; the five
built-ins are the paper's strategies (baseline peer reply; role-play of the poster's culture;
counselling-competence guidelines; the post's annotations; all three combined, with four of the
guidelines) in jaxcult's own words. A template file (YAML `name: {system, user}`) adds
strategies or replaces built-ins.

Fields: {post} the post text; {culture} the poster's culture; {annotations} the post's distress
phrases with intensities and cultural signals with types; {definitions} what those labels mean;
{guidelines} all seven guidelines; {core_guidelines} the four the combined strategy uses.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

from jaxcult.errors import UserError
from jaxcult.recipes.care.schema import AnnotatedPost

FIELDS = ("post", "culture", "annotations", "definitions", "guidelines", "core_guidelines")

_REPLY_RULES = ("Write only the reply itself: no role name, no headings, no mention of these "
                "instructions. Reply in the language the post is written in.")

GUIDELINES = (
    "Respect the poster's cultural background and treat differences from your own as normal.",
    "Stay at ease with values and habits that differ from yours; do not judge them.",
    "Take into account how the society and politics around the poster shape their situation.",
    "Show that you know the poster's culture, its customs, beliefs and pressures.",
    "Speak to the poster in a way that suits them: tone, directness and formality.",
    "See the problem the way it looks from inside the poster's cultural context.",
    "Acknowledge cultural differences openly where they matter to the problem.",
)
CORE_GUIDELINES = GUIDELINES[2:6]

DEFINITIONS = """\
Distress phrases are where the poster voices inner suffering (worry, sadness, anger, fear).
Their intensity is light (present but mild), moderate (clearly felt) or high (overwhelming).
Cultural signals are words that show the poster's culture; their types are:
- Concepts: ideas, objects or beliefs that carry meaning in the culture
- Knowledge: facts learnt at school or from experience in the culture
- Values: what the culture ranks as important or desirable
- Norms and Morals: the rules people are expected to live by
- Language: slang, dialect or words from the culture's language
- Artifacts: things made in the culture (food, art, tools)
- Demographics: nationality, ethnicity or group identity"""

_ANNOTATION_NOTE = ("Annotators marked the post's distress phrases, with how intense each is, and "
                    "its cultural signals, with their type. Use them to reply with empathy and "
                    "cultural sensitivity.\n\n{definitions}")

BUILT_IN: dict[str, dict[str, str]] = {
    "baseline": {
        "system": "You are a member of an online peer-support forum answering a post.\n"
                  + _REPLY_RULES,
        "user": "Post:\n{post}\n\nYour reply:"},
    "culture": {
        "system": "You are a member of an online peer-support forum who shares the {culture} "
                  "culture of the person who wrote the post, and you answer it.\n" + _REPLY_RULES,
        "user": "Post:\n{post}\n\nYour reply:"},
    "guidelines": {
        "system": "You are a member of an online peer-support forum answering a post.\n"
                  + _REPLY_RULES + "\n\nFollow these guidelines throughout your reply:\n"
                  "{guidelines}",
        "user": "Post:\n{post}\n\nYour reply:"},
    "annotations": {
        "system": "You are a member of an online peer-support forum answering a post.\n"
                  + _REPLY_RULES + "\n\n" + _ANNOTATION_NOTE,
        "user": "Post:\n{post}\n\nAnnotations of the post:\n{annotations}\n\nYour reply:"},
    "combined": {
        "system": "You are a member of an online peer-support forum who shares the {culture} "
                  "culture of the person who wrote the post, and you answer it.\n"
                  + _REPLY_RULES + "\n\n" + _ANNOTATION_NOTE
                  + "\n\nFollow these guidelines throughout your reply:\n{core_guidelines}",
        "user": "Post:\n{post}\n\nAnnotations of the post:\n{annotations}\n\nYour reply:"},
}
BASELINE = "baseline"


def _numbered(lines: tuple[str, ...]) -> str:
    return "\n".join(f"{n}. {line}" for n, line in enumerate(lines, 1))


def render_annotations(post: AnnotatedPost) -> str:
    """The post's distress phrases (with intensity) and cultural signals (with type)."""
    lines = [f'- distress: "{s.phrase}" (intensity: {s.label or "not rated"})'
             for s in post.distress]
    lines += [f'- cultural signal: "{s.phrase}" (type: {s.label or "not typed"})'
              for s in post.signals]
    return "\n".join(lines) or "(none marked)"


@dataclass(frozen=True)
class Strategy:
    name: str
    system: str
    user: str

    def chat(self, post: AnnotatedPost) -> list[dict[str, str]]:
        """The conversation the supporter model answers for `post`."""
        values = {"post": post.text or "", "culture": post.culture,
                  "annotations": render_annotations(post), "definitions": DEFINITIONS,
                  "guidelines": _numbered(GUIDELINES), "core_guidelines": _numbered(CORE_GUIDELINES)}
        turns = [("system", self.system), ("user", self.user)]
        return [{"role": role, "content": text.format(**values)} for role, text in turns if text]


def _check_template(text: str, where: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        raise UserError(f"{where}: not a valid template ({error}; write {{{{ and }}}} for "
                        f"literal braces)") from None
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise UserError(f"{where}: unknown field {{{unknown[0]}}} (fields: "
                        f"{', '.join(FIELDS)})")


def load_strategies(names: list[str], template_file: Path | None) -> dict[str, Strategy]:
    """The strategies `names` asks for, from the built-ins and the template file."""
    templates = {name: dict(turns) for name, turns in BUILT_IN.items()}
    if template_file is not None:
        if not template_file.is_file():
            raise UserError(f"{template_file}: strategy template file not found")
        found = yaml.safe_load(template_file.read_text(encoding="utf-8"))
        if not isinstance(found, dict):
            raise UserError(f"{template_file}: expected a mapping of strategy name to "
                            f"{{system, user}}")
        for name, turns in found.items():
            if not isinstance(turns, dict) or not isinstance(turns.get("user"), str) or set(
                    turns) - {"system", "user"}:
                raise UserError(f"{template_file}: strategy {name!r} needs 'user' (and may have "
                                f"'system') text, nothing else")
            templates[str(name)] = {"system": turns.get("system") or "", "user": turns["user"]}
    strategies = {}
    for name in names:
        if name not in templates:
            raise UserError(f"unknown strategy {name!r} (known: {', '.join(templates)}; add "
                            f"one with strategy_templates)")
        turns = templates[name]
        for role in ("system", "user"):
            _check_template(turns[role], f"strategy {name}.{role}")
        if "{post}" not in turns["user"] + turns["system"]:
            raise UserError(f"strategy {name}: its templates never place the {{post}}")
        strategies[name] = Strategy(name, turns["system"], turns["user"])
    return strategies
