"""Intent annotation (CLCA §3.2): for every utterance, the annotator model predicts the
speaker's intent in that turn with respect to the social or cultural expectations of the
culture, given the scenario and the conversation up to that utterance. An answer without
`INTENT:` becomes "unknown". The share of intents that mention the culture (its adjective,
country or listed names) is the paper's Table 9 column.
"""

from __future__ import annotations

import re

from jaxcult.config import GenerationConfig
from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Scenario
from jaxcult.generation.chat import ChatModel
from jaxcult.recipes.clca import prompts
from jaxcult.recipes.clca.parsing import parse_intent
from jaxcult.recipes.clca.roleplay import transcript, utterances

UNKNOWN = "unknown"


def mentions(intent: str, culture: Culture) -> bool:
    words = (culture.adjective, culture.country.removeprefix("the "), *culture.names)
    return any(re.search(rf"\b{re.escape(w)}\b", intent, re.I) for w in words)


def annotate(records: list[dict], scenarios: list[Scenario], cultures: list[Culture],
             model: ChatModel, config: GenerationConfig, prefix: str = "") -> list[dict]:
    """Each record with `intents: [{turn, role, intent}]` (one per utterance, in order)."""
    chats, owners = [], []
    for index, (record, scenario, culture) in enumerate(zip(records, scenarios, cultures)):
        lines = transcript(record, scenario)
        roles = [role for role, _ in utterances(record)]
        turns = [t["turn"] for t in record["dialog"] for role in ("inquirer", "responder")
                 if t.get(f"{role}_action") is not None]
        for position, (role, turn) in enumerate(zip(roles, turns)):
            person = scenario.person1 if role == "inquirer" else scenario.person2
            chats.append(prompts.intent_chat(scenario, culture, lines[:position + 1], person.name))
            owners.append((index, turn, role))
    annotated = [{**r, "intents": []} for r in records]
    for (index, turn, role), reply in zip(owners, model.reply(chats, config, prefix=prefix)):
        intent = parse_intent(reply.text) if reply.error is None else None
        annotated[index]["intents"].append({"turn": turn, "role": role,
                                            "intent": intent or UNKNOWN})
    return annotated


def culture_mention_share(records: list[dict], cultures: list[Culture]) -> float:
    """Fraction of known intents (not "unknown") that mention their culture."""
    known = [(i["intent"], c) for r, c in zip(records, cultures) for i in r["intents"]
             if i["intent"] != UNKNOWN]
    return sum(mentions(text, c) for text, c in known) / len(known) if known else 0.0
