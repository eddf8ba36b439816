"""The three training views of a conversation (CLCA §3.3), as chat records for the causal-LM
trainer (assistant-only loss):

- `perspective1`: user = inquirer, assistant = responder;
- `perspective2`: user = responder, assistant = inquirer, so the chat starts with an assistant
  turn (trained too; templates that need a user turn first get an empty one at tokenisation);
- `intent`, laid out as the official code does (`build.intent_layout: conversation`, the
  default): under a system prompt with the scenario, both names and the task (no backgrounds),
  one chat per conversation, every utterance a user turn "{name}: utterance" followed
  by an assistant turn "Intent: ..." ("unknown" kept); or (`utterance`, jaxcult's earlier
  layout) one single-turn chat per utterance without the conversation before it, unknown
  intents left out.

The perspective views' system prompt holds the scenario, one speaker's name, background and
occupation and "you are X ... of the {culture} culture": no goals, secrets or culture
dimensions, as in the paper. The speaker is the assistant's own (`build.view_persona:
assistant`, the default: the model learns to speak as the person it is told it is) or, as the
official code has it, the user-side speaker (`user`). `views: [dialogue, intent]` selects the
views (dialogue = both perspectives).
"""

from __future__ import annotations

from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Scenario
from jaxcult.recipes.clca import prompts
from jaxcult.recipes.clca.intents import UNKNOWN
from jaxcult.recipes.clca.roleplay import ROLES, utterances

VIEWS = ("dialogue", "intent")


def _perspective(record: dict, scenario: Scenario, culture: Culture, assistant: str,
                 persona: str) -> list[dict]:
    me, other = ((scenario.person2, scenario.person1) if assistant == "responder"
                 else (scenario.person1, scenario.person2))
    described = me if persona == "assistant" else other
    messages = [{"role": "system", "content": prompts.view_system(scenario, described, culture)}]
    for role, text in utterances(record):
        messages.append({"role": "assistant" if role == assistant else "user", "content": text})
    while messages[-1]["role"] == "user":   # nothing to learn from an unanswered turn
        messages.pop()
    return messages if len(messages) > 1 else []


def _intent_records(record: dict, scenario: Scenario, culture: Culture,
                    layout: str) -> list[list[dict]]:
    names = {"inquirer": scenario.person1.name, "responder": scenario.person2.name}
    system = {"role": "system", "content": prompts.intent_view_system(scenario, culture)}
    turns = []
    for (role, text), intent in zip(utterances(record), record.get("intents", [])):
        if intent["role"] != role:
            raise ValueError(f"{record['id']}: intents do not line up with the utterances")
        turns.append(({"role": "user", "content": f"{names[role]}: {text}"},
                      {"role": "assistant", "content": f"Intent: {intent['intent']}"}))
    if layout == "conversation":
        return [[system, *(message for turn in turns for message in turn)]] if turns else []
    return [[system, *turn] for turn in turns if turn[1]["content"] != f"Intent: {UNKNOWN}"]


def build_views(record: dict, scenario: Scenario, culture: Culture,
                views: tuple[str, ...] = VIEWS, intent_layout: str = "conversation",
                view_persona: str = "assistant") -> list[dict]:
    """The chat records of one annotated dialogue record for the selected views."""
    out = []
    base = {"dialogue": record["id"], "culture": culture.key}
    if "dialogue" in views:
        for number, assistant in enumerate(reversed(ROLES), 1):
            messages = _perspective(record, scenario, culture, assistant, view_persona)
            if messages:
                out.append({"messages": messages, "view": f"perspective{number}", **base})
    if "intent" in views:
        out.extend({"messages": m, "view": "intent", **base}
                   for m in _intent_records(record, scenario, culture, intent_layout))
    return out
