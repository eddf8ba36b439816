"""The evaluate stage: cultural multiple choice under each condition, then stories, then the
report.

Per (benchmark, model) `evaluate/<benchmark>/<model>.jsonl` holds one record per (condition,
question): the knowledge put in the prompt, the reasoning (cot), each option's
log-probability, the prediction and whether it is right. Conditions: none; cot (the model
reasons first, greedy by default, then the options are scored after its reasoning);
assertions:<language> (the `evaluate.assertions` assertions of the country's graph in that
language closest to the question) and path:<language> (the closest path); adapter (the model
the adapt stage trained, with the country's adapter, no retrieval). Records are appended a
batch of questions at a time, so a killed stage continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from jaxcult.recipes.cckg import prompting
from jaxcult.recipes.cckg.benchmarks import LAYOUTS, Layout, Question, read_questions
from jaxcult.recipes.cckg.config import BenchmarkConfig
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.cckg.knowledge import UNITS, Condition, conditions, graph_texts, retrieve
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """A model name or folder as a file name."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "model"


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def questions(graphs: Graphs, benchmark: BenchmarkConfig) -> tuple[list[Question], int]:
    preset = LAYOUTS[benchmark.layout]
    layout = Layout(**{**preset.__dict__, **benchmark.columns})
    found, discarded = read_questions(benchmark.name, graphs.path(benchmark.file), layout)
    return found[:benchmark.limit], discarded


def knowledge_for(graphs: Graphs, condition: Condition, country: str, queries: list[str]
                  ) -> list[list[str]]:
    """Per query the graph texts a retrieval condition puts in the prompt (none otherwise)."""
    if condition.kind not in UNITS:
        return [[] for _ in queries]
    texts = graph_texts(graphs, condition.kind, country, condition.language)
    k = graphs.config.evaluate.assertions if condition.kind == "assertions" else 1
    return [[texts[i] for i in picked] for picked in retrieve(graphs, queries, texts, k)]


def adapter_or_none(graphs: Graphs, model: str, country: str, condition: Condition
                    ) -> Path | None:
    if condition.kind != "adapter":
        return None
    from jaxcult.recipes.cckg.adapt import adapter_folder

    return adapter_folder(graphs, model, country)


def _provenance(graphs: Graphs, benchmark: BenchmarkConfig, model: str) -> dict:
    settings = graphs.config.evaluate
    return {"stage": "evaluate", "model": model, "benchmark": benchmark.model_dump(mode="json"),
            "file": file_digest(graphs.path(benchmark.file)),
            "prompts": digest(prompting.KNOWLEDGE_HEADS, prompting.LETTER_TASK,
                              prompting.OPTION_TASK, prompting.THINK, prompting.ANSWER_LEAD),
            "graph": {name: file_digest(graphs.out / name) for name in UNITS.values()},
            **settings.model_dump(mode="json", include={
                "assertions", "path_text", "scoring", "retriever", "scoring_generation",
                "cot_generation"})}


def _score_batch(graphs: Graphs, model: str, benchmark: BenchmarkConfig, condition: Condition,
                 batch: list[Question], stream: int) -> list[dict]:
    """Records of `batch` under `condition`."""
    from jaxcult.generation.scoring import score

    settings = graphs.config.evaluate
    adapter = adapter_or_none(graphs, model, benchmark.country, condition)
    student = graphs.student(model, adapter)
    tokenizer = student.tokenizer
    found = knowledge_for(graphs, condition, benchmark.country, [q.question for q in batch])
    chats = [prompting.question_chat(q, settings.scoring, prompting.knowledge_block(
        condition.kind, benchmark.country, texts), condition.kind == "cot")
        for q, texts in zip(batch, found)]
    reasoning: list[str | None] = [None] * len(batch)
    errors: list[str | None] = [None] * len(batch)
    if condition.kind == "cot":
        replies = student.reply(chats, settings.cot_generation, stream=stream)
        reasoning = [r.text for r in replies]
        errors = [r.error for r in replies]
    pairs = [prompting.scored(q, settings.scoring, prompting.render(chat, tokenizer), thought)
             for q, chat, thought in zip(batch, chats, reasoning)]
    flat = [pair for each in pairs for pair in each]
    scores = score(student.model, tokenizer, [p for p, _ in flat], [c for _, c in flat],
                   settings.scoring_generation,
                   add_special_tokens=not getattr(tokenizer, "chat_template", None))
    records, start = [], 0
    for q, texts, thought, error in zip(batch, found, reasoning, errors):
        logprobs = [s.logprob for s in scores[start:start + len(q.options)]]
        start += len(q.options)
        predicted = int(np.argmax(logprobs))
        records.append({"key": [condition.label, q.number], "condition": condition.label,
                        "number": q.number, "where": q.where, "answer": q.answer,
                        "logprobs": logprobs, "predicted": predicted,
                        "correct": predicted == q.answer, "knowledge": texts,
                        "reasoning": thought, "error": error})
    if adapter is not None:
        graphs.forget(model, adapter)
    return records


def answers_path(graphs: Graphs, benchmark: str, model: str) -> Path:
    return graphs.out / "evaluate" / benchmark / f"{slug(model)}.jsonl"


def multiple_choice(graphs: Graphs) -> dict:
    """Every (benchmark, model, condition, question) answered; per benchmark the questions,
    discarded rows and the conditions left out for want of a graph."""
    settings = graphs.config.evaluate
    facts = {}
    for benchmark in settings.benchmarks:
        asked, discarded = questions(graphs, benchmark)
        made, missing = conditions(graphs, benchmark.country, settings.conditions)
        facts[benchmark.name] = {"questions": len(asked), "discarded_rows": discarded,
                                 "conditions": [c.label for c in made],
                                 "without_graph": missing}
        for model in settings.models:
            path = answers_path(graphs, benchmark.name, model)
            check_provenance(path, _provenance(graphs, benchmark, model))
            done = {tuple(r["key"]) for r in read_records(path)}
            for index, condition in enumerate(made):
                if condition.kind == "adapter" and adapter_or_none(
                        graphs, model, benchmark.country, condition) is None:
                    continue
                todo = [q for q in asked if (condition.label, q.number) not in done]
                size = settings.questions_per_batch
                for start in range(0, len(todo), size):
                    append_records(path, _score_batch(graphs, model, benchmark, condition,
                                                      todo[start:start + size],
                                                      stream=index * 1024 + todo[start].number // size))
                    log.info(f"cckg evaluate: {benchmark.name} {model} {condition.label}: "
                             f"{min(start + size, len(todo))}/{len(todo)}")
            path.touch()
    return facts
