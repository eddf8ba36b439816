"""The five CLCA stages over a `Pipeline`; each returns its summary facts (the runner writes
them to `summary.json`). See `jaxcult.recipes.clca` for the files they read and write."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.recipes.clca.intents import UNKNOWN, culture_mention_share
from jaxcult.recipes.clca.intents import annotate as annotate_records
from jaxcult.recipes.clca.judge import judge as judge_records
from jaxcult.recipes.clca.pipeline import Pipeline, stage_input
from jaxcult.recipes.clca.prompts import prompts_hash
from jaxcult.recipes.clca.roleplay import Behaviour, Dialogue
from jaxcult.recipes.clca.roleplay import simulate as simulate_dialogues
from jaxcult.recipes.clca.views import build_views
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records
from jaxcult.remote.settings import ModelSpec, model_label
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

CHUNK = 64  # records judged or annotated between saves


def _provenance(stage: str, models: list[ModelSpec], generation, **settings) -> dict:
    return {"stage": stage, "models": [model_label(m) for m in models],
            "prompts_hash": prompts_hash(),
            "generation": generation.provenance(), **settings}


def _per_culture(records: list[dict], facts) -> dict:
    cultures = dict.fromkeys(r["culture"] for r in records)
    return {c: facts([r for r in records if r["culture"] == c]) for c in cultures}


def _progress(stage: str, done: int, total: int) -> None:
    log.info(f"clca {stage}: {done}/{total}")


def simulate(pipeline: Pipeline) -> dict:
    settings = pipeline.config.simulate
    responder_name = settings.responder_model or settings.model
    path = pipeline.out / "dialogues.jsonl"
    check_provenance(path, _provenance(
        "simulate", [settings.model, responder_name], settings.generation,
        max_turns=settings.max_turns, repair=settings.repair,
        dialogues_per_batch=settings.dialogues_per_batch, answer_prefix=settings.answer_prefix,
        on_parse_failure=settings.on_parse_failure))
    written = {r["id"] for r in read_records(path)}
    plan = [(s, culture, sample) for key, culture in pipeline.cultures.items()
            for s in pipeline.scenarios[key] for sample in range(settings.samples)]
    size, stride = settings.dialogues_per_batch, 2 * settings.max_turns + 2
    batches = [plan[i:i + size] for i in range(0, len(plan), size)]
    todo = [(n, b) for n, b in enumerate(batches)
            if any(f"{s.id}#{k}" not in written for s, _, k in b)]
    how = Behaviour(settings.generation, settings.repair, settings.answer_prefix,
                    settings.on_parse_failure)
    if todo:
        inquirer = pipeline.model(settings.model)
        responder = pipeline.model(responder_name)
    for number, batch in todo:
        dialogues = [Dialogue(s, c, k) for s, c, k in batch if f"{s.id}#{k}" not in written]
        append_records(path, simulate_dialogues(
            dialogues, inquirer, responder, max_turns=settings.max_turns, how=how,
            stream=number * stride, on_turn=lambda turn, role, active: log.info(
                f"clca simulate: batch {number + 1}/{len(batches)}, turn {turn}, {role}: "
                f"{active} dialogues")))
        _progress("simulate", sum(len(b) for n, b in enumerate(batches) if n <= number), len(plan))
    records = [r for r in read_records(path) if r["culture"] in pipeline.cultures]
    facts = _per_culture(records, lambda rs: {
        "conversations": len(rs), "mean_turns": round(sum(r["num_turns"] for r in rs) / len(rs), 2),
        "stop_reasons": dict(Counter(r["stop_reason"] for r in rs)),
        "parse_failures": sum(len(r["parse_failures"]) for r in rs),
        "repaired": sum(r["repairs"] for r in rs)})
    return facts


def _chunked(pipeline: Pipeline, stage: str, source: list[dict], path: Path, work) -> list[dict]:
    """Run `work(records) -> records` over the source records not yet in `path`, in chunks."""
    done = {r["id"] for r in read_records(path)}
    todo = [r for r in source if r["id"] not in done]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        pairs = [pipeline.scenario_of(r) for r in chunk]
        append_records(path, work(chunk, [p[0] for p in pairs], [p[1] for p in pairs]))
        _progress(stage, len(source) - len(todo) + start + len(chunk), len(source))
    wanted = {r["id"] for r in source}
    return [r for r in read_records(path) if r["id"] in wanted]


def judge(pipeline: Pipeline) -> dict:
    settings = pipeline.config.judge
    name = settings.model or pipeline.config.simulate.model
    path = pipeline.out / "judged.jsonl"
    check_provenance(path, _provenance(
        "judge", [name], settings.generation, on_unparsed=settings.on_unparsed,
        prefill_field=settings.prefill_field,
        discard_when=[[c.model_dump() for c in clause] for clause in settings.discard_when]))

    def work(records: list[dict], scenarios, cultures) -> list[dict]:
        talk = [i for i, r in enumerate(records) if r["num_turns"] > 0]
        judged = dict(zip(talk, judge_records(
            [records[i] for i in talk], [scenarios[i] for i in talk],
            [cultures[i] for i in talk], pipeline.model(name), settings) if talk else []))
        return [judged.get(i, {**r, "judgement": {"discarded": True, "reason": "no turns"}})
                for i, r in enumerate(records)]
    judged = _chunked(pipeline, "judge", stage_input(pipeline, "dialogues.jsonl", "simulate"),
                      path, work)

    def facts(rs: list[dict]) -> dict:
        verdicts = {k: dict(Counter(r["judgement"][k]["verdict"] or "unreadable" for r in rs
                                    if k in r["judgement"])) for k in ("quality", "culture", "meta")}
        kept = sum(not r["judgement"]["discarded"] for r in rs)
        return {"conversations": len(rs), "kept": kept, "discarded": len(rs) - kept,
                "verdicts": verdicts}
    summary = _per_culture(judged, facts)
    return summary


def kept_records(pipeline: Pipeline) -> list[dict]:
    judged = stage_input(pipeline, "judged.jsonl", "judge")
    kept = [r for r in judged if not r["judgement"]["discarded"]]
    for key in pipeline.cultures:
        mine = [r for r in judged if r["culture"] == key]
        if mine and not any(r["culture"] == key for r in kept):
            raise UserError(f"{pipeline.out / 'judged.jsonl'}: the judge discarded every {key} "
                            f"conversation ({len(mine)}); nothing to learn from. Inspect the "
                            f"verdicts there, simulate more (simulate.samples, more scenarios) or "
                            f"relax judge.discard_when")
    return kept


def annotate(pipeline: Pipeline) -> dict:
    settings = pipeline.config.annotate
    name = settings.model or pipeline.config.simulate.model
    path = pipeline.out / "annotated.jsonl"
    check_provenance(path, _provenance("annotate", [name], settings.generation,
                                       answer_prefix=settings.answer_prefix))
    annotated = _chunked(pipeline, "annotate", kept_records(pipeline), path,
                         lambda rs, ss, cs: annotate_records(rs, ss, cs, pipeline.model(name),
                                                             settings.generation,
                                                             settings.answer_prefix))

    def facts(rs: list[dict]) -> dict:
        intents = [i["intent"] for r in rs for i in r["intents"]]
        culture = pipeline.cultures[rs[0]["culture"]]
        return {"utterances": len(intents),
                "unknown": sum(i == UNKNOWN for i in intents),
                "mention_culture": round(culture_mention_share(rs, [culture] * len(rs)), 4)}
    summary = _per_culture(annotated, facts)
    return summary


def split_dialogues(ids: list[str], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, validation) conversation ids; a single conversation serves both."""
    if len(ids) < 2:
        return set(ids), set(ids)
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    held = min(len(order) - 1, max(1, round(fraction * len(order)))) if fraction > 0 else 0
    return set(order[held:]), set(order[:held]) or set(order)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build(pipeline: Pipeline) -> dict:
    settings = pipeline.config.build
    views = tuple(settings.views)
    records = (stage_input(pipeline, "annotated.jsonl", "annotate") if "intent" in views
               else kept_records(pipeline))
    summary = {}
    for key in pipeline.cultures:
        mine = [r for r in records if r["culture"] == key]
        if not mine:
            raise UserError(f"clca build: no {key} conversation left to train on; run the "
                            f"earlier stages for it")
        train_ids, held_ids = split_dialogues([r["id"] for r in mine],
                                              settings.validation_fraction, settings.seed)
        chats = {r["id"]: build_views(r, *pipeline.scenario_of(r), views, settings.intent_layout,
                                      settings.view_persona)
                 for r in mine}
        train = [c for i in sorted(train_ids) for c in chats[i]]
        held = [c for i in sorted(held_ids) for c in chats[i]]
        if not train:
            raise UserError(f"clca build: the {key} conversations give no training example for "
                            f"views {list(views)} (every turn unanswered or every intent unknown)")
        folder = pipeline.out / "data" / key
        _write_jsonl(folder / "train.jsonl", train)
        _write_jsonl(folder / "validation.jsonl", held or train)
        summary[key] = {"train_conversations": len(train_ids),
                        "validation_conversations": len(held_ids),
                        "examples": dict(Counter(c["view"] for c in train)),
                        "validation_examples": len(held or train)}
        if train_ids & held_ids:
            summary[key]["note"] = "too few conversations: validation repeats the training ones"
    return summary


def train(pipeline: Pipeline) -> dict:
    from jaxcult.recipes.clca.training import train_culture

    settings = pipeline.config.train
    if settings is None:
        raise UserError("clca train: the config has no `train` section (train.config: the YAML "
                        "of the training run)")
    summary = {key: train_culture(pipeline, key, settings) for key in pipeline.cultures}
    return summary
