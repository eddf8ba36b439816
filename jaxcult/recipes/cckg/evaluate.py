"""The evaluate stage: cultural multiple choice under each condition, then stories, then the
report.

Per (benchmark, model) `evaluate/<benchmark>/<model>.jsonl` holds one record per (condition,
question): the knowledge put in the prompt, the reasoning (cot), each option's
log-probability (`generation.scoring.option_logprobs`: letters, single tokens, from one forward
per question; option texts from one forward per option), the prediction and whether it is
right. Conditions: none; cot (the model
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

from jaxcult.errors import UserError
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


def check_adapter_model(graphs: Graphs, kinds: list[str]) -> None:
    """The adapter condition needs the model the adapt stage trains among the models."""
    if "adapter" not in kinds:
        return
    from jaxcult.recipes.cckg.adapt import trained_model

    trained = trained_model(graphs)
    if trained not in graphs.config.evaluate.models:
        raise UserError(f"cckg evaluate: the adapter condition asks {trained} (the model the "
                        f"adapt stage trains), which evaluate.models does not list")


def adapter_digests(graphs: Graphs, model: str, countries: list[str], kinds: list[str]
                    ) -> dict:
    """What the adapter condition's answers depend on: each country's exported weights."""
    if "adapter" not in kinds:
        return {}
    found = {}
    for country in countries:
        folder = adapter_or_none(graphs, model, country, Condition("adapter"))
        if folder is not None:
            found[country] = file_digest(folder / "adapter_model.safetensors")
    return found


def _provenance(graphs: Graphs, benchmark: BenchmarkConfig, model: str) -> dict:
    settings = graphs.config.evaluate
    return {"stage": "evaluate", "model": model, "benchmark": benchmark.model_dump(mode="json"),
            "adapters": adapter_digests(graphs, model, [benchmark.country],
                                        list(settings.conditions)),
            "file": file_digest(graphs.path(benchmark.file)),
            "prompts": digest(prompting.KNOWLEDGE_HEADS, prompting.LETTER_TASK,
                              prompting.OPTION_TASK, prompting.THINK, prompting.ANSWER_LEAD),
            "graph": {name: file_digest(graphs.out / name) for name in UNITS.values()},
            **settings.model_dump(mode="json", include={
                "assertions", "path_text", "scoring", "retriever", "scoring_batches",
                "cot_generation"})}


def _score_batch(graphs: Graphs, model: str, benchmark: BenchmarkConfig, condition: Condition,
                 batch: list[Question], stream: int) -> list[dict]:
    """Records of `batch` under `condition`."""
    from jaxcult.generation.scoring import option_logprobs

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
    scored = [prompting.scored(q, settings.scoring, prompting.render(chat, tokenizer), thought)
              for q, chat, thought in zip(batch, chats, reasoning)]
    scores = option_logprobs(student.model, tokenizer, [p for p, _ in scored],
                             [options for _, options in scored], settings.scoring_batches.generation(),
                             add_special_tokens=not getattr(tokenizer, "chat_template", None))
    records = []
    for q, texts, thought, error, logprobs in zip(batch, found, reasoning, errors, scores):
        logprobs = [float(x) for x in logprobs]
        predicted = int(np.argmax(logprobs))
        records.append({"key": [condition.label, q.number], "condition": condition.label,
                        "number": q.number, "where": q.where, "answer": q.answer,
                        "logprobs": logprobs, "predicted": predicted,
                        "correct": predicted == q.answer, "knowledge": texts,
                        "reasoning": thought, "error": error})
    return records


def answers_path(graphs: Graphs, benchmark: str, model: str) -> Path:
    return graphs.out / "evaluate" / benchmark / f"{slug(model)}.jsonl"


def multiple_choice(graphs: Graphs) -> dict:
    """Every (benchmark, model, condition, question) answered; per benchmark the questions,
    discarded rows and the conditions left out for want of a graph."""
    settings = graphs.config.evaluate
    check_adapter_model(graphs, list(settings.conditions))
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
                adapter = adapter_or_none(graphs, model, benchmark.country, condition)
                if condition.kind == "adapter" and adapter is None:
                    continue       # not the model the adapt stage trains
                todo = [q for q in asked if (condition.label, q.number) not in done]
                size = settings.questions_per_batch
                for start in range(0, len(todo), size):
                    stream = index * 1024 + todo[start].number // size
                    append_records(path, _score_batch(graphs, model, benchmark, condition,
                                                      todo[start:start + size], stream))
                    log.info(f"cckg evaluate: {benchmark.name} {model} {condition.label}: "
                             f"{min(start + size, len(todo))}/{len(todo)}")
                if adapter is not None:
                    graphs.forget(model, adapter)
            path.touch()
    if "adapter" in settings.conditions:
        from jaxcult.recipes.cckg.adapt import trained_model

        facts["adapter_condition_model"] = trained_model(graphs)
    return facts
