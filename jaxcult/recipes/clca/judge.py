"""Judge filtering (CLCA §3.1): three evaluations per conversation at temperature 0 — quality
(good/bad + verbalised confidence), cultural alignment (aligned/not aligned + confidence), and
a meta-evaluation that reads both (good/bad, confidence, critique).

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
from jaxcult.recipes.clca.config import JUDGE_LABELS, ClcaJudgeConfig
from jaxcult.recipes.clca.parsing import Verdict, parse_verdict
from jaxcult.recipes.clca.roleplay import transcript


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
    contexts = [prompts.judge_context(s, c, transcript(r, s))
                for r, s, c in zip(records, scenarios, cultures)]
    verdicts: list[dict[str, Verdict]] = [{} for _ in records]
    for kind in ("quality", "culture"):
        chats = [prompts.judge_chat(kind, ctx, c) for ctx, c in zip(contexts, cultures)]
        for found, reply in zip(verdicts, model.reply(chats, config, prefix=settings.answer_prefix)):
            found[kind] = parse_verdict(reply.text if reply.error is None else "", JUDGE_LABELS[kind])
    chats = [prompts.judge_chat("meta", ctx, c, v["quality"].describe(), v["culture"].describe())
             for ctx, c, v in zip(contexts, cultures, verdicts)]
    for found, reply in zip(verdicts, model.reply(chats, config, prefix=settings.answer_prefix)):
        found["meta"] = parse_verdict(reply.text if reply.error is None else "", JUDGE_LABELS["meta"],
                                      critique=True)
    rule = [[c.model_dump() for c in clause] for clause in settings.discard_when]
    return [{**r, "judgement": {**{k: _as_dict(v) for k, v in found.items()},
                                "discarded": discarded(found, rule, settings.on_unparsed)}}
            for r, found in zip(records, verdicts)]
