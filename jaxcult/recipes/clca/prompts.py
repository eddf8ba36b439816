"""The prompts of every CLCA stage (paper §3, App. A), in jaxcult's words with the official
code's content: the same fields, rules and choices (docs/clca.md lists what still differs).

Role-play: each agent's system prompt holds the scenario, both names, the culture's
Inglehart–Welzel and Hofstede dimensions, its own background, occupation, goal and secrets, and
the other's background and occupation with goal "Unknown"; each turn's user prompt holds the
conversation so far ("Name - ACTION: ... / OUTPUT: ..."), the turn number, the four numbered
action types, the rule for leaving and the answer schema, in English only. Judges see the
scenario record as JSON and the dialog turn by turn, answer with numbered choices (three
confidence levels), and the meta judge reads the first two judgements. The intent annotator
sees the scenario header and the conversation up to the utterance it annotates; the intent
training view has its own short system prompt (the scenario, both names, the task).
`prompts_hash()` names this text in every output's provenance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Person, Scenario
from jaxcult.generation.prompts import Chat
from jaxcult.recipes.clca.config import CONFIDENCE_LEVELS, JUDGE_FIELDS, JUDGE_LABELS

ACTIONS = ("none", "non-verbal communication", "speak", "leave")   # numbered 1..4 in prompts
SHOWN = {"non-verbal communication": "non-verbal"}                 # the action's name in prompts
SHOWN_ACTIONS = tuple(SHOWN.get(a, a) for a in ACTIONS)

AGENT_SYSTEM = """The context of this interaction:
Scenario: {setting}
Participants: {persona}
Both participants are {adjective}; their culture has these dimensions:
{description}
About {name}:
Background: {background}
Occupation: {occupation}
Goal: {goal}
Secrets: {secrets}
About {other}:
Background: {other_background}
Occupation: {other_occupation}
Goal: Unknown
You are {name}. Speak and act as {name} would, as a member of the {adjective} culture whose \
conduct fits the dimensions above, with {name}'s social goal in mind."""

AGENT_TURN = """{name}'s conversation so far:
{history}
You are at Turn #{turn}.
The action types you can choose: {actions}
Choose 4. leave as soon as 1) you have achieved your own social goals, or 2) the goal has a \
clear outcome, whether success or failure.
Reply with the action type and its argument only, in this schema:
ACTION: <action_type>
OUTPUT: <your_output>
<your_output> is what you say for 3. speak, the physical action for 2. non-verbal, a closing \
sentence for 4. leave, and NONE otherwise.
Write the reply in English only:"""

NO_HISTORY = "The interaction is just beginning; there is no history yet."

REPAIR = """The following response of {name} in a conversation does not follow the required format.
Response: {raw}
Rewrite it in exactly this format, keeping its meaning:
ACTION: <one of: {actions}>
OUTPUT: <what {name} says or does, or NONE>"""

JUDGE_TASK = {
    "quality": "judge the quality of their conversation and give the quality and your \
confidence. A conversation is of bad quality if many sentences repeat towards its end or its \
content does not fit the given setting.",
    "culture": "judge whether their conversation aligns with the {adjective} culture and give \
the culture alignment and your confidence.",
    "meta": "critique the judgement below and give a meta label for the conversation's \
alignment with the {adjective} culture and your confidence (do not judge whether the goals \
were achieved).",
}

def numbered(choices) -> str:
    return ", ".join(f"{n}. {c}" for n, c in enumerate(choices, 1))


JUDGE_CHOICES = {kind: numbered(f"{label} to the culture" if kind == "culture" else label
                                for label in labels) for kind, labels in JUDGE_LABELS.items()}

JUDGE = """Read the dialog between two people below, with their basic information, and {task}
{field} choices: {choices}
Confidence choices: {levels}
The participants' basic information:
{persona}
The dialog:
{dialog}{judgement}
Answer with the choice numbers only, without explanations, in this schema:
{field}: <choice>
Confidence: <choice>{critique}"""

INTENT_SYSTEM = """Basic information about this conversation:
Scenario: {setting}
About {name1}:
Background: {background1}
Occupation: {occupation1}
About {name2}:
Background: {background2}
Occupation: {occupation2}
Both participants are {adjective}, and you are an expert on the {adjective} culture."""

INTENT_ASK = """{history}
From the conversation above, predict {name}'s intent in the last turn and give the reason in \
one short sentence, with respect to the social or cultural expectations of the {adjective} \
culture that may shape the tone and content of this interaction. Give the reason only when you \
are very sure of it, and stay brief.
Answer in this schema:
INTENT: <intent>
Write the answer in English only:"""

INTENT_VIEW_SYSTEM = """Scenario: {setting}
The conversation has two participants, {name1} and {name2}. Predict each participant's intent \
in one short sentence, in the light of the social or cultural expectations of the {adjective} \
culture."""

VIEW_SYSTEM = """Scenario: {setting}
About {name}:
Background: {background}
Occupation: {occupation}
You are {name}: speak and act as {name} would, as a member of the {adjective} culture."""

TEMPLATES = (AGENT_SYSTEM, AGENT_TURN, NO_HISTORY, REPAIR, *JUDGE_TASK.values(),
             *JUDGE_CHOICES.values(), JUDGE, INTENT_SYSTEM, INTENT_ASK, INTENT_VIEW_SYSTEM,
             VIEW_SYSTEM)


def prompts_hash() -> str:
    """Short hash of every prompt template (recorded with each stage's outputs)."""
    return hashlib.sha256("\x00".join(TEMPLATES).encode()).hexdigest()[:16]


def utterance(action: str, text: str) -> str:
    """An action as one line of conversation: speech verbatim, the rest as *stage directions*."""
    if action == "speak":
        return text
    if action == "non-verbal communication":
        return f"*{text}*"
    if action == "leave":
        return text if text else "*leaves the conversation*"
    return "*stays silent*"


def agent_system(scenario: Scenario, me: Person, other: Person, culture: Culture) -> str:
    return AGENT_SYSTEM.format(
        setting=scenario.setting, persona=scenario.persona, name=me.name, other=other.name,
        adjective=culture.adjective, description=culture.description, background=me.background,
        occupation=me.occupation, goal=me.goal, secrets=me.secrets or "None",
        other_background=other.background, other_occupation=other.occupation)


def history_line(name: str, action: str, text: str) -> str:
    """One action in the agents' history, in the schema they answer in."""
    return f"{name} - ACTION: {SHOWN.get(action, action)}\nOUTPUT: {text or 'NONE'}"


def agent_turn(me: Person, turn: int, history: list[str]) -> str:
    return AGENT_TURN.format(name=me.name, history="\n".join(history) or NO_HISTORY, turn=turn,
                             actions=numbered(SHOWN_ACTIONS))


def agent_chat(scenario: Scenario, me: Person, other: Person, culture: Culture, turn: int,
               history: list[str]) -> Chat:
    return [{"role": "system", "content": agent_system(scenario, me, other, culture)},
            {"role": "user", "content": agent_turn(me, turn, history)}]


def repair_chat(name: str, raw: str) -> Chat:
    return [{"role": "user", "content": REPAIR.format(
        name=name, raw=raw.strip(), actions=", ".join(SHOWN_ACTIONS))}]


def scenario_json(scenario: Scenario) -> str:
    """The scenario record as the judges read it (the official judge reads the whole record)."""
    return json.dumps({"culture": scenario.culture, "persona": scenario.persona,
                       "setting": scenario.setting, "person1": asdict(scenario.person1),
                       "person2": asdict(scenario.person2)}, ensure_ascii=False)


def judge_dialog(turns: list[tuple[int, str, str]]) -> str:
    """(turn, person 1's utterance, person 2's utterance) as the judges read a dialog."""
    return "\n".join(f"Turn {turn}\nPerson 1: {first}\nPerson 2: {second}"
                     for turn, first, second in turns)


def judge_chat(kind: str, scenario: Scenario, dialog: str, culture: Culture,
               judgement: str = "") -> Chat:
    """The chat of one judge; `judgement` (the meta judge only) holds the first two verdicts."""
    text = JUDGE.format(
        task=JUDGE_TASK[kind].format(adjective=culture.adjective), field=JUDGE_FIELDS[kind],
        choices=JUDGE_CHOICES[kind], levels=numbered(CONFIDENCE_LEVELS),
        persona=scenario_json(scenario), dialog=dialog,
        judgement=f"\nThe judgement:\n{judgement}" if kind == "meta" else "",
        critique="\nCritique: <critique>" if kind == "meta" else "")
    return [{"role": "user", "content": text}]


def intent_chat(scenario: Scenario, culture: Culture, history: list[str], name: str) -> Chat:
    p1, p2 = scenario.person1, scenario.person2
    system = INTENT_SYSTEM.format(
        setting=scenario.setting, name1=p1.name, background1=p1.background,
        occupation1=p1.occupation, name2=p2.name, background2=p2.background,
        occupation2=p2.occupation, adjective=culture.adjective)
    return [{"role": "system", "content": system},
            {"role": "user", "content": INTENT_ASK.format(history="\n".join(history), name=name,
                                                          adjective=culture.adjective)}]


def view_system(scenario: Scenario, person: Person, culture: Culture) -> str:
    return VIEW_SYSTEM.format(setting=scenario.setting, background=person.background,
                              occupation=person.occupation, name=person.name,
                              adjective=culture.adjective)


def intent_view_system(scenario: Scenario, culture: Culture) -> str:
    return INTENT_VIEW_SYSTEM.format(setting=scenario.setting, name1=scenario.person1.name,
                                     name2=scenario.person2.name, adjective=culture.adjective)
