"""Judge filtering (CLCA §3.1): three evaluations per conversation at temperature 0, each a
numbered choice with a confidence of three levels — quality (good/bad), cultural alignment
(aligned/not aligned), and a meta-evaluation of the conversation's cultural alignment that
reads the first two (good/bad, confidence, critique).

A conversation is discarded when any clause of the rule holds; a clause is a conjunction of
conditions `{judge, verdict, confidence: [levels]}`. The paper's rule (the default):
(meta bad ∧ very confident) ∨ (quality bad ∧ very confident). A verdict that could not be read
satisfies no condition; `on_unparsed: discard` drops such conversations instead. Every verdict,
raw text included, stays in the output for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxcult.config import GenerationConfig
from jaxcult.data.cultures import Culture
from jaxcult.data.scenarios import Scenario
from jaxcult.generation.chat import ChatModel
from jaxcult.recipes.clca import prompts
from jaxcult.recipes.clca.config import JUDGE_FIELDS, ClcaJudgeConfig
from jaxcult.recipes.clca.parsing import Verdict, parse_verdict
from jaxcult.recipes.clca.roleplay import judge_turns


def holds(condition: dict, verdicts: dict[str, Verdict]) -> bool:
    verdict = verdicts[condition["judge"]]
    return (verdict.verdict == condition["verdict"]
            and verdict.confidence in condition["confidence"])


def discarded(verdicts: dict[str, Verdict], rule: Sequence[Sequence[dict]],
              on_unparsed: str = "keep") -> bool:
    if on_unparsed == "discard" and any(v.verdict is None for v in verdicts.values()):
        return True
    return any(all(holds(c, verdicts) for c in clause) for clause in rule)


def _as_dict(verdict: Verdict) -> dict:
    return {"verdict": verdict.verdict, "confidence": verdict.confidence,
            "critique": verdict.critique, "raw": verdict.raw}


def judge(records: list[dict], scenarios: list[Scenario], cultures: list[Culture],
          model: ChatModel, settings: ClcaJudgeConfig) -> list[dict]:
    """Each record with `judgement: {quality, culture, meta, discarded}` added."""
    config: GenerationConfig = settings.generation
    dialogs = [prompts.judge_dialog(judge_turns(r)) for r in records]
    verdicts: list[dict[str, Verdict]] = [{} for _ in records]

    def ask(kind: str, chats: list) -> None:
        prefix = f"{JUDGE_FIELDS[kind]}:" if settings.prefill_field else ""
        for found, reply in zip(verdicts, model.reply(chats, config, prefix=prefix)):
            found[kind] = parse_verdict(reply.text if reply.error is None else "", kind)

    for kind in ("quality", "culture"):
        ask(kind, [prompts.judge_chat(kind, s, d, c)
                   for s, d, c in zip(scenarios, dialogs, cultures)])
    ask("meta", [prompts.judge_chat("meta", s, d, c, judgement(v))
                 for s, d, c, v in zip(scenarios, dialogs, cultures, verdicts)])
    rule = [[c.model_dump() for c in clause] for clause in settings.discard_when]
    return [{**r, "judgement": {**{k: _as_dict(v) for k, v in found.items()},
                                "discarded": discarded(found, rule, settings.on_unparsed)}}
            for r, found in zip(records, verdicts)]


def judgement(verdicts: dict[str, Verdict]) -> str:
    """The first two verdicts as the meta judge reads them."""
    return (f"Culture alignment: {verdicts['culture'].describe()}\n"
            f"Quality: {verdicts['quality'].describe()}")
