"""The teacher's prompts, in jaxcult's words (the paper's facts: "If [action], then
[knowledge]" assertions with one of five relations, as JSON; expansion into the steps between
an action and its knowledge and the steps after it)."""

from __future__ import annotations

from jaxcult.generation.prompts import Chat

SYSTEM = ("You record cultural commonsense: what people in a country habitually do, and what "
          "tends to come before and after it.")

RELATION_GUIDE = """\
Each statement has one relation between its action and its knowledge:
- xEffect: what the action does to the person who does it
- xNext: what that person usually does next
- xNeed: what that person has to do first
- oNext: what other people usually do next
- oEffect: what the action does to other people
("x" is the person acting, "o" the people around them.)"""

GENERATE = """\
Write as many if-then statements of everyday cultural commonsense about {subtopic} in \
{country} as you can: "If [action], then [knowledge]", where the knowledge is what people in \
{country} typically do or experience before or after the action.

{relations}

Write the action, the knowledge and the sentence in {language}. Answer with a JSON array and \
nothing else:
[{{"action": "...", "knowledge": "...", "relation_type": "xNext", "result": "If ..., then ..."}}]"""

EXPAND = """\
About {subtopic} in {country}: "{sentence}" (action: {action}; knowledge: {knowledge}; \
relation: {relation}).

List the steps people in {country} usually take between the action and the knowledge \
(intermediate steps), and the steps that usually follow the knowledge (next steps), each as an \
if-then statement.

{relations}

Write everything but the relation names in {language}. Answer with one JSON object and \
nothing else:
{{"intermediate_steps": [{{"action": "...", "knowledge": "...", "relation_type": "xNext", \
"event": "If ..., then ..."}}], "next_steps": [...]}}"""


def generation_chat(country: str, language: str, subtopic: str) -> Chat:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": GENERATE.format(
                country=country, language=language, subtopic=subtopic, relations=RELATION_GUIDE)}]


def expansion_chat(country: str, language: str, subtopic: str, row: dict) -> Chat:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": EXPAND.format(
                country=country, language=language, subtopic=subtopic, relations=RELATION_GUIDE,
                sentence=row["sentence"], action=row["action"], knowledge=row["knowledge"],
                relation=row["relation"])}]
