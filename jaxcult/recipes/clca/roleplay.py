"""Role-play simulation (CLCA §3.1): two agents of one culture talk in a scenario.

Dialogues advance together, one batched generation per agent per turn. Each turn the inquirer
(person1) acts, then the responder (person2); an agent's answer must read `ACTION: ...`,
`OUTPUT: ...`. A malformed answer gets one repair call (the same model rewrites it into the
format, greedy); if that fails too, the dialogue stops with `stop_reason: parse_failure` and the
raw text is kept in `parse_failures` (or, with `on_parse_failure: speak`, the text is taken as
speech and the failure is still recorded). `leave` ends the dialogue, as does `max_turns`, or a
prompt longer than the engine's largest length bucket (`context_overflow`).

Output record: `{id, scenario, culture, persona, sample, num_turns, stop_reason, dialog: [{turn,
inquirer_action, inquirer, responder_action, responder}], parse_failures, repairs}`; a turn the
inquirer ended has `responder_action: null`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from jaxcult.config import GenerationConfig
from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Person, Scenario
from jaxcult.generation.chat import ChatModel
from jaxcult.recipes.clca import prompts
from jaxcult.recipes.clca.parsing import Action, parse_action

ROLES = ("inquirer", "responder")


@dataclass
class Dialogue:
    scenario: Scenario
    culture: Culture
    sample: int
    dialog: list[dict] = field(default_factory=list)
    history: list[str] = field(default_factory=list)   # prompts.history_line of each action
    parse_failures: list[dict] = field(default_factory=list)
    repairs: int = 0
    stop_reason: str | None = None

    def people(self, role: str) -> tuple[Person, Person]:
        one, two = self.scenario.person1, self.scenario.person2
        return (one, two) if role == "inquirer" else (two, one)

    def record(self) -> dict:
        return {"id": f"{self.scenario.id}#{self.sample}", "scenario": asdict(self.scenario),
                "culture": self.culture.key, "persona": self.scenario.persona,
                "sample": self.sample, "num_turns": len(self.dialog),
                "stop_reason": self.stop_reason, "dialog": self.dialog,
                "parse_failures": self.parse_failures, "repairs": self.repairs}


@dataclass(frozen=True)
class Behaviour:
    """How agents answer: decoding, the answer's forced start, and what a malformed answer does."""

    config: GenerationConfig
    repair: bool = True
    prefix: str = ""
    on_parse_failure: str = "stop"   # or "speak"


def as_speech(raw: str, prefix: str, name: str) -> Action | None:
    """A malformed answer's text taken as speech: after `OUTPUT:` if present, else all of it,
    up to the first blank line."""
    text = raw[len(prefix):] if raw.startswith(prefix) else raw
    text = re.split(r"OUTPUT\s*:", text, maxsplit=1, flags=re.I)[-1]
    text = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    found = parse_action(f"ACTION: speak\nOUTPUT: {text}", name)
    return found


def _repair(model: ChatModel, pending: list[tuple[Dialogue, str]], role: str,
            how: Behaviour) -> list[Action | None]:
    greedy = how.config.model_copy(update={"do_sample": False})
    chats = [prompts.repair_chat(d.people(role)[0].name, raw) for d, raw in pending]
    return [parse_action(r.text, d.people(role)[0].name) if r.error is None else None
            for r, (d, _) in zip(model.reply(chats, greedy, prefix=how.prefix), pending)]


def _act(dialogues: list[Dialogue], model: ChatModel, role: str, turn: int, how: Behaviour,
         stream: int) -> list[Action | None]:
    """Every dialogue's agent `role` acts once; None where the dialogue stopped instead."""
    chats = []
    for d in dialogues:
        me, other = d.people(role)
        chats.append(prompts.agent_chat(d.scenario, me, other, d.culture, turn, d.history))
    replies = model.reply(chats, how.config, stream, how.prefix)
    actions = [parse_action(r.text, d.people(role)[0].name) if r.error is None else None
               for r, d in zip(replies, dialogues)]
    broken = [i for i, (a, r) in enumerate(zip(actions, replies)) if a is None and r.error is None]
    if how.repair and broken:
        fixed = _repair(model, [(dialogues[i], replies[i].text) for i in broken], role, how)
        for i, action in zip(broken, fixed):
            dialogues[i].repairs += action is not None
            actions[i] = action
    for index, (d, reply, action) in enumerate(zip(dialogues, replies, actions)):
        if reply.error is not None:
            d.stop_reason = "context_overflow"
            d.parse_failures.append({"turn": turn, "role": role, "raw": "", "error": reply.error})
        elif action is None:
            fallback = as_speech(reply.text, how.prefix, d.people(role)[0].name) \
                if how.on_parse_failure == "speak" else None
            d.parse_failures.append({"turn": turn, "role": role, "raw": reply.text,
                                     "taken_as_speech": fallback is not None})
            if fallback is None:
                d.stop_reason = "parse_failure"
            actions[index] = fallback
    return actions


def simulate(dialogues: list[Dialogue], inquirer: ChatModel, responder: ChatModel, *,
             max_turns: int, how: Behaviour, stream: int = 0,
             on_turn: Callable[[int, str, int], None] | None = None) -> list[dict]:
    """Run `dialogues` to their end; returns their records (input order). `on_turn(turn, role,
    active)` is called after each agent's batched answers."""
    for turn in range(1, max_turns + 1):
        for index, (role, model) in enumerate(zip(ROLES, (inquirer, responder))):
            active = [d for d in dialogues if d.stop_reason is None]
            if not active:
                break
            actions = _act(active, model, role, turn, how, stream + 2 * turn + index)
            if on_turn is not None:
                on_turn(turn, role, len(active))
            for d, action in zip(active, actions):
                if action is None:
                    continue
                d.history.append(prompts.history_line(d.people(role)[0].name, action.action,
                                                      action.text))
                if role == "inquirer":
                    d.dialog.append({"turn": turn, "inquirer_action": action.action,
                                     "inquirer": action.text, "responder_action": None,
                                     "responder": ""})
                else:
                    d.dialog[-1].update(responder_action=action.action, responder=action.text)
                if action.action == "leave":
                    d.stop_reason = "leave"
    for d in dialogues:
        d.stop_reason = d.stop_reason or "max_turns"
    return [d.record() for d in dialogues]


def utterances(record: dict) -> list[tuple[str, str]]:
    """(role, utterance) of every action of a dialogue record, in order."""
    said = []
    for turn in record["dialog"]:
        for role in ROLES:
            if turn.get(f"{role}_action") is not None:
                said.append((role, prompts.utterance(turn[f"{role}_action"], turn[role])))
    return said


def judge_turns(record: dict) -> list[tuple[int, str, str]]:
    """(turn, inquirer's utterance, responder's utterance) of each turn, as the judges see them;
    the responder's is empty in a turn the inquirer ended."""
    return [(turn["turn"], prompts.utterance(turn["inquirer_action"], turn["inquirer"]),
             prompts.utterance(turn["responder_action"], turn["responder"])
             if turn.get("responder_action") is not None else "")
            for turn in record["dialog"]]


def transcript(record: dict, scenario: Scenario) -> list[str]:
    names = {"inquirer": scenario.person1.name, "responder": scenario.person2.name}
    return [f"{names[role]}: {text}" for role, text in utterances(record)]
