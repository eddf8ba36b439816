"""The knowledge-graph stages over a `Graphs` context; each returns its summary facts.

generate -> `generation.jsonl`: per (country, language, subtopic) the teacher's reply, its
assertions and what the parser repaired or dropped (an unparsable reply is kept, counted).
expand -> `expansion-<round>.jsonl`: per expanded assertion the teacher's reply with its
intermediate and next steps. Round 0 expands every initial next-step assertion (xNext, oNext);
before round r > 0, round r-1's next steps are merged into the graph (a step whose knowledge
is close to a known node joins that node; the others stay new, and those among the first
`max_new_nodes` of their row are expanded in round r); the last round's are merged by `paths`.
paths -> `assertions.jsonl` (every edge kept after cleaning) and `paths.jsonl` (the maximal
paths from each subtopic's initial events, with and without relations).
adapt -> `adapt/` (per-country LoRA adapters on the graph; `jaxcult.recipes.cckg.adapt`).
evaluate -> `evaluate/` (multiple choice and stories per condition, `report.{json,md}`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxcult.errors import UserError
from jaxcult.eval.sentence_embeddings import cosine_matrix
from jaxcult.recipes.cckg import prompts
from jaxcult.recipes.cckg.adapt import adapt as train_adapters
from jaxcult.recipes.cckg.config import CultureConfig
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.cckg.evaluate import multiple_choice
from jaxcult.recipes.cckg.graph import (
    NEXT_RELATIONS,
    Edge,
    clean_edges,
    maximal_paths,
    merge_targets,
    relations_along,
    render,
)
from jaxcult.recipes.cckg.replies import Parsed, parse_expansion, parse_generation
from jaxcult.recipes.cckg.report import write_report
from jaxcult.recipes.cckg.stories import rate_stories, write_stories
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records
from jaxcult.remote.settings import model_label
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

ROUND_STRIDE = 1 << 10   # random streams reserved per expansion round


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _culture_key(culture: CultureConfig | dict) -> tuple[str, str]:
    if isinstance(culture, dict):
        return culture["country"], culture["language"]
    return culture.country, culture.language


def _ask(graphs: Graphs, path: Path, provenance: dict, jobs: list[tuple[tuple, list, dict]],
         settings, prefix: str, read: Callable[[str], dict], size: int, stream: int) -> None:
    """Ask the teacher (or look up the recorded replies) each (key, chat, record) job not in
    `path` yet, `size` jobs per saved batch (batch n samples from random stream `stream + n`,
    whatever ran before a resume); each answer's record gets the reply and what `read(reply)`
    makes of it."""
    check_provenance(path, provenance)
    recorded = graphs.recorded()
    done = {tuple(r["key"]) for r in read_records(path)}
    for number, start in enumerate(range(0, len(jobs), size)):
        batch = [job for job in jobs[start:start + size] if tuple(job[0]) not in done]
        if not batch:
            continue
        replies = (recorded.reply(provenance["stage"], [tuple(k) for k, _, _ in batch])
                   if recorded is not None else
                   graphs.teacher().reply([chat for _, chat, _ in batch], settings,
                                          stream=stream + number, prefix=prefix))
        append_records(path, [{"key": list(key), **record, "reply": reply.text,
                               "error": reply.error, **(read(reply.text) if reply.error is None
                                                        else {})}
                              for (key, _, record), reply in zip(batch, replies)])
        log.info(f"cckg: {path.name}: {min(start + size, len(jobs))}/{len(jobs)}")
    path.touch()   # done, even when there was nothing to ask


def _parsed(parsed: Parsed) -> dict:
    return {"repaired": parsed.repaired, "dropped": parsed.dropped}


def _generation_provenance(graphs: Graphs) -> dict:
    settings = graphs.config.generate
    teacher = ({"recorded": graphs.recorded().digest()} if settings.recorded is not None
               else model_label(settings.teacher))
    return {"stage": "generate", "teacher": teacher,
            "prompt": _digest(prompts.SYSTEM, prompts.GENERATE, prompts.RELATION_GUIDE),
            "answer_prefix": settings.answer_prefix,
            "generation": settings.generation.provenance()}


def generate(graphs: Graphs) -> dict:
    """`generation.jsonl` (see the module docstring)."""
    def read(reply: str) -> dict:
        parsed = parse_generation(reply)
        return {"assertions": parsed.records, **_parsed(parsed)}

    jobs = [((c.country, c.language, subtopic), prompts.generation_chat(c.country, c.language,
                                                                        subtopic),
             {"country": c.country, "language": c.language, "subtopic": subtopic})
            for c in graphs.config.cultures for subtopic in c.subtopics]
    path = graphs.out / "generation.jsonl"
    settings = graphs.config.generate
    _ask(graphs, path, _generation_provenance(graphs), jobs, settings.generation,
         settings.answer_prefix, read, settings.prompts_per_batch, 0)
    return _reply_facts(_records(graphs, path, "generate"), "assertions")


def _records(graphs: Graphs, path: Path, made_by: str) -> list[dict]:
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no records; run `jaxcult cckg {made_by}` first")
    wanted = {(c.country, c.language) for c in graphs.config.cultures}
    return [r for r in records if (r["country"], r["language"]) in wanted]


def _reply_facts(records: list[dict], field: str) -> dict:
    got = [len(r.get(field, [])) if field != "steps" else
           len(r.get("intermediate", [])) + len(r.get("next", [])) for r in records]
    dropped: dict[str, int] = {}
    for r in records:
        for reason, n in r.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
    return {"replies": len(records), "failed": sum(r["error"] is not None for r in records),
            "unparsable": sum(r["error"] is None and n == 0 for r, n in zip(records, got)),
            field: sum(got), "repaired_objects": sum(r.get("repaired", 0) for r in records),
            "dropped_objects": dropped}


def _row(record: dict, assertion: dict, sentence_key: str) -> dict:
    return {"country": record["country"], "language": record["language"],
            "subtopic": record["subtopic"], "action": assertion["action"],
            "knowledge": assertion["knowledge"], "relation": assertion["relation_type"],
            "sentence": assertion[sentence_key]}


def initial_rows(graphs: Graphs) -> list[dict]:
    return [_row(r, a, "result") for r in _records(graphs, graphs.out / "generation.jsonl",
                                                   "generate") for a in r.get("assertions", [])]


def _expansion_path(graphs: Graphs, number: int) -> Path:
    return graphs.out / f"expansion-{number}.jsonl"


def intermediate_rows(graphs: Graphs, number: int) -> list[dict]:
    records = read_records(_expansion_path(graphs, number))
    return [{**_row(r, s, "event"), "round": number} for r in records
            for s in r.get("intermediate", [])]


def merge_threshold(graphs: Graphs, language: str) -> float:
    """The language's encoder's own threshold, else `expand.threshold`."""
    own = graphs.encoder_settings(language).threshold
    return graphs.config.expand.threshold if own is None else own


def merged_next_steps(graphs: Graphs, number: int, known: list[dict]
                      ) -> tuple[list[dict], list[dict]]:
    """Round `number`'s next steps as graph rows, each knowledge merged into a known node
    (events and knowledge of `known`, per country and language) when close enough; and the
    unmatched ones to expand next (the first `max_new_nodes` of their row)."""
    settings = graphs.config.expand
    records = read_records(_expansion_path(graphs, number))
    rows, to_expand = [], []
    for culture in graphs.config.cultures:
        key = _culture_key(culture)
        nodes = sorted({n for r in known if _culture_key(r) == key
                        for n in (r["action"], r["knowledge"])})
        steps = [(r, position, s) for r in records if _culture_key(r) == key
                 for position, s in enumerate(r.get("next", []))]
        if not steps:
            continue
        targets = ([None] * len(steps) if not nodes else merge_targets(cosine_matrix(
            graphs.embed(culture.language, [s["knowledge"] for _, _, s in steps]),
            graphs.embed(culture.language, nodes)), merge_threshold(graphs, culture.language),
            settings.merge))
        for (record, position, step), target in zip(steps, targets):
            row = {**_row(record, step, "event"), "round": number}
            if target is not None:
                rows.append({**row, "knowledge": nodes[target], "merged_from": step["knowledge"]})
                continue
            rows.append(row)
            if position < settings.max_new_nodes:
                to_expand.append(row)
    return rows, to_expand


def _expansion_provenance(graphs: Graphs) -> dict:
    expand = graphs.config.expand
    return {**_generation_provenance(graphs), "stage": "expand",
            "expand_prompt": _digest(prompts.EXPAND),
            "expand": expand.model_dump(mode="json", exclude={"rounds"})}


def graph_rows(graphs: Graphs, rounds: int) -> tuple[list[dict], list[dict]]:
    """Every row of the graph after `rounds` rounds of expansion (their next steps merged),
    and the rows that round `rounds` expands."""
    rows = initial_rows(graphs)
    to_expand = [r for r in rows if r["relation"] in NEXT_RELATIONS]
    for number in range(rounds):
        rows += intermediate_rows(graphs, number)
        merged, to_expand = merged_next_steps(graphs, number, rows)
        rows += merged
    return rows, to_expand


def expand(graphs: Graphs) -> dict:
    """`expansion-<round>.jsonl` for every round (see the module docstring)."""
    settings = graphs.config.expand

    def read(reply: str) -> dict:
        middle, following = parse_expansion(reply)
        dropped = dict(middle.dropped)
        for reason, n in following.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        return {"intermediate": middle.records, "next": following.records,
                "repaired": middle.repaired + following.repaired, "dropped": dropped}

    facts = {}
    for number in range(settings.rounds):
        _, to_expand = graph_rows(graphs, number)
        jobs = [((r["country"], r["language"], r["subtopic"], r["action"], r["knowledge"]),
                 prompts.expansion_chat(r["country"], r["language"], r["subtopic"], r),
                 {"country": r["country"], "language": r["language"], "subtopic": r["subtopic"],
                  "row": {k: r[k] for k in ("action", "knowledge", "relation", "sentence")}})
                for r in to_expand]
        jobs = list({tuple(job[0]): job for job in jobs}.values())   # a row asked once
        path = _expansion_path(graphs, number)
        _ask(graphs, path, {**_expansion_provenance(graphs), "round": number}, jobs,
             settings.generation, settings.answer_prefix, read,
             graphs.config.generate.prompts_per_batch, (number + 1) * ROUND_STRIDE)
        facts[f"round_{number}"] = _reply_facts(read_records(path), "steps") if jobs else {
            "replies": 0}
    return facts


def paths(graphs: Graphs) -> dict:
    """`assertions.jsonl` and `paths.jsonl` (see the module docstring)."""
    rounds = graphs.config.expand.rounds
    missing = [n for n in range(rounds) if not _expansion_path(graphs, n).exists()]
    if missing:
        raise UserError(f"{_expansion_path(graphs, missing[0])}: not found; run `jaxcult cckg "
                        f"expand` first")
    rows, _ = graph_rows(graphs, rounds)
    initial = initial_rows(graphs)
    assertions, path_records, facts = [], [], {}
    for culture in graphs.config.cultures:
        key = _culture_key(culture)
        own = [r for r in rows if _culture_key(r) == key]
        edges = [Edge(r["action"], r["knowledge"], r["relation"], r["subtopic"]) for r in own]
        kept, dropped = clean_edges(edges)
        by_edge = {}
        for edge, row in zip(edges, own):
            by_edge.setdefault(edge, row)
        assertions += [by_edge[e] for e in kept]
        count = 0
        for subtopic in culture.subtopics:
            sub = [e for e in kept if e.subtopic == subtopic]
            sources = [r["action"] for r in initial
                       if _culture_key(r) == key and r["subtopic"] == subtopic]
            for nodes in maximal_paths(sub, sources):
                relations = relations_along(sub, nodes)
                path_records.append({"country": key[0], "language": key[1],
                                     "subtopic": subtopic, "nodes": nodes,
                                     "relations": relations, "length": len(nodes) - 1,
                                     "with_relations": render(nodes, relations),
                                     "without_relations": render(nodes)})
                count += 1
        facts[f"{key[0]}/{key[1]}"] = {"assertions": len(kept), "dropped": dropped,
                                       "paths": count}
    for name, records in (("assertions.jsonl", assertions), ("paths.jsonl", path_records)):
        write_text_atomic(graphs.out / name, "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return facts


def adapt(graphs: Graphs) -> dict:
    """Per-country adapters on the graph (`jaxcult.recipes.cckg.adapt`)."""
    return train_adapters(graphs)


def evaluate(graphs: Graphs) -> dict:
    """Multiple choice and stories under each condition, then the report (see
    `jaxcult.recipes.cckg.evaluate`, `.stories`, `.report`)."""
    settings = graphs.config.evaluate
    if settings is None:
        raise UserError("cckg evaluate: the config has no `evaluate` section (models, "
                        "benchmarks and/or stories)")
    facts = {}
    if settings.benchmarks:
        facts["multiple_choice"] = multiple_choice(graphs)
    if settings.stories is not None:
        missing = []
        for model in settings.models:
            missing = write_stories(graphs, model)
            rate_stories(graphs, model)
        facts["stories_without_graph"] = missing
    facts["report"] = write_report(graphs)
    return facts
