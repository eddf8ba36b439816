"""The prompts of every CLCA stage (paper §3, App. A), written for jaxcult.

Role-play: each agent's system prompt holds the scenario, both names, the culture description,
its own background, occupation, goal and secrets, and the other's background and occupation
with goal "Unknown"; each turn's user prompt holds the conversation so far, the turn number and
the action schema. Judges see the scenario and the transcript. The intent annotator sees the
scenario header and the conversation up to the utterance it annotates. `prompts_hash()` names
this text in every output's provenance.
"""

from __future__ import annotations

import hashlib

from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Person, Scenario
from jaxcult.generation.prompts import Chat
from jaxcult.recipes.clca.config import CONFIDENCE_LEVELS

ACTIONS = ("none", "non-verbal communication", "speak", "leave")

AGENT_SYSTEM = """Here is the context of this interaction:
Scenario: {setting}
Participants: {name} and {other}
Both participants are from the {adjective} culture. {description}
{name}'s background: {background}
{name}'s occupation: {occupation}
{name}'s goal: {goal}
{name}'s secrets: {secrets}
{other}'s background: {other_background}
{other}'s occupation: {other_occupation}
{other}'s goal: Unknown
Imagine you are {name}, a person from the {adjective} culture. Act and speak as {name} would in \
this situation, pursuing {name}'s goal and following the social norms of the {adjective} \
culture."""

AGENT_TURN = """You are at Turn #{turn}. {history}
Your available action types are: {actions}.
You may "leave" the conversation when you have achieved your goal, when it makes you \
uncomfortable, when you lose interest, or for any other reason to end it.
Please only generate a response in the following format:
ACTION: <one of: {actions}>
OUTPUT: <what {name} says (speak) or does (non-verbal communication); empty for none>"""

REPAIR = """The following response of {name} in a conversation does not follow the required format.
Response: {raw}
Rewrite it in exactly this format, keeping its meaning:
ACTION: <one of: {actions}>
OUTPUT: <what {name} says or does>"""

JUDGE_CONTEXT = """Here is a conversation between {persona}, both from the {adjective} culture.
Scenario: {setting}
{person1}'s background: {background1}
{person2}'s background: {background2}
Conversation:
{transcript}"""

JUDGE_QUALITY = """{context}

Evaluate the quality of this conversation: is it coherent and natural, consistent with the \
scenario and the participants, and free of repetition and role confusion?
Answer in exactly this format:
VERDICT: <good or bad>
CONFIDENCE: <{levels}>"""

JUDGE_CULTURE = """{context}

Does this conversation align with the social norms and expectations of the {adjective} culture \
(what people say, how they say it, and what they leave unsaid)?
Answer in exactly this format:
VERDICT: <aligned or not aligned>
CONFIDENCE: <{levels}>"""

JUDGE_META = """{context}

Two evaluations of this conversation:
Quality: {quality}
Cultural alignment: {culture}
Taking both evaluations and the conversation itself into account, is this a good example of \
a natural conversation between two people of the {adjective} culture?
Answer in exactly this format:
VERDICT: <good or bad>
CONFIDENCE: <{levels}>
CRITIQUE: <one or two sentences>"""

INTENT_SYSTEM = """Here is the basic information about this conversation.
Scenario: {setting}
Information about {name1}:
Background: {background1}
Occupation: {occupation1}
Information about {name2}:
Background: {background2}
Occupation: {occupation2}
Both participants are from the {adjective} culture, and you are an expert in the {adjective} \
culture."""

INTENT_ASK = """{history}
Please predict {name}'s intent in the last turn based on the provided conversation, and reason \
the prediction with respect to the social or cultural expectations in {adjective} culture that \
might influence the tone and content of this interaction, in one short sentence. Only explain \
the reasons when you are very certain; keep it short.
Please follow the schema:
INTENT: <intent>
Please only output the response in English:"""

VIEW_SYSTEM = """Scenario: {setting}
Your background: {background}
Your occupation: {occupation}
Imagine you are {name}, a person from the {adjective} culture, talking with {other}. Respond \
as {name} would."""

TEMPLATES = (AGENT_SYSTEM, AGENT_TURN, REPAIR, JUDGE_CONTEXT, JUDGE_QUALITY, JUDGE_CULTURE,
             JUDGE_META, INTENT_SYSTEM, INTENT_ASK, VIEW_SYSTEM)


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
        setting=scenario.setting, name=me.name, other=other.name, adjective=culture.adjective,
        description=culture.description, background=me.background, occupation=me.occupation,
        goal=me.goal, secrets=me.secrets or "None", other_background=other.background,
        other_occupation=other.occupation)


def agent_turn(me: Person, turn: int, history: list[str]) -> str:
    said = ("The conversation so far:\n" + "\n".join(history)) if history else \
        "The conversation has not started yet; you speak first."
    return AGENT_TURN.format(turn=turn, history=said, actions=", ".join(ACTIONS), name=me.name)


def agent_chat(scenario: Scenario, me: Person, other: Person, culture: Culture, turn: int,
               history: list[str]) -> Chat:
    return [{"role": "system", "content": agent_system(scenario, me, other, culture)},
            {"role": "user", "content": agent_turn(me, turn, history)}]


def repair_chat(name: str, raw: str) -> Chat:
    return [{"role": "user", "content": REPAIR.format(name=name, raw=raw.strip(),
                                                      actions=", ".join(ACTIONS))}]


def judge_context(scenario: Scenario, culture: Culture, transcript: list[str]) -> str:
    return JUDGE_CONTEXT.format(
        persona=scenario.persona, adjective=culture.adjective, setting=scenario.setting,
        person1=scenario.person1.name, background1=scenario.person1.background,
        person2=scenario.person2.name, background2=scenario.person2.background,
        transcript="\n".join(transcript))


def judge_chat(kind: str, context: str, culture: Culture, quality: str = "",
               alignment: str = "") -> Chat:
    template = {"quality": JUDGE_QUALITY, "culture": JUDGE_CULTURE, "meta": JUDGE_META}[kind]
    text = template.format(context=context, adjective=culture.adjective, quality=quality,
                           culture=alignment, levels=", ".join(CONFIDENCE_LEVELS))
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


def view_system(scenario: Scenario, me: Person, other: Person, culture: Culture) -> str:
    return VIEW_SYSTEM.format(setting=scenario.setting, background=me.background,
                              occupation=me.occupation, name=me.name, other=other.name,
                              adjective=culture.adjective)
