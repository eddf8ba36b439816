"""Replies and their judgements as append-only files: what the care stages that generate
(prompted strategies, adapters) and judge share."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from jaxcult.recipes.care.judge import TEMPLATE
from jaxcult.recipes.care.run import CareRun
from jaxcult.recipes.care.schema import AnnotatedPost
from jaxcult.recipes.care.strategies import Strategy
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records
from jaxcult.remote.settings import model_label

log = logging.getLogger(__name__)

BATCH_STRIDE = 1 << 10     # generation batch indices reserved per saved batch (resume-stable)
STRATEGY_STRIDE = 1 << 20  # ... and per strategy


def key(record: dict) -> tuple[str, str, str]:
    return record["strategy"], record["culture"], record["post_id"]


def template_digest(strategy: Strategy) -> str:
    return hashlib.sha256(f"{strategy.system}\0{strategy.user}".encode()).hexdigest()[:16]


def write_replies(run: CareRun, path: Path, provenance: dict,
                  jobs: list[tuple[str, Strategy, AnnotatedPost]], adapter: Path | None = None,
                  stream: int = 0) -> None:
    """Append a reply per (label, strategy, post) job not in `path` yet, a batch of
    `posts_per_batch` jobs at a time (a killed stage loses at most the batch in flight)."""
    from jaxcult.generation.api import generate_ids
    from jaxcult.generation.engine import Generator
    from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults
    from jaxcult.generation.prompts import encode

    settings = run.config.generate
    check_provenance(path, provenance)
    done = {key(r) for r in read_records(path)}
    size = settings.posts_per_batch
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    generator = None
    for number, batch in enumerate(batches):
        todo = [job for job in batch if (job[0], job[2].culture, job[2].post_id) not in done]
        if not todo:
            continue
        if generator is None:
            generator = Generator(*run.model(settings.model, adapter), with_model_defaults(
                settings.generation, load_generation_defaults(settings.model)))
        ids = encode([strategy.chat(post) for _, strategy, post in todo], generator.tokenizer)
        completions = generate_ids(generator, ids, first_batch=stream + number * BATCH_STRIDE)
        append_records(path, [{"strategy": label, "culture": post.culture,
                               "post_id": post.post_id, "reply": c.text,
                               "finish_reason": c.finish_reason, "error": c.error,
                               "prompt_tokens": len(prompt)}
                              for (label, _, post), c, prompt in zip(todo, completions, ids)])
        log.info(f"care: {path.name}: {min(len(jobs), (number + 1) * size)}/{len(jobs)} replies")


def reply_facts(records: list[dict]) -> dict:
    return {"replies": len(records), "failed": sum(r["error"] is not None for r in records),
            "cut_at_max_new_tokens": sum(r["finish_reason"] == "length" for r in records)}


def _judge_provenance(run: CareRun) -> dict:
    settings = run.config.judge
    return {"stage": "judge",
            "judges": [model_label(spec) for spec in run.judge_specs().values()],
            "metrics": {name: [m.group, m.definition, *m.scale] for name, m in run.metrics.items()},
            "template": hashlib.sha256(TEMPLATE.encode()).hexdigest()[:16],
            "judge": settings.model_dump(mode="json", exclude={"model", "second_model", "metrics",
                                                               "rubrics", "replies_per_batch"})}


def judge_replies(run: CareRun, replies: Path, path: Path) -> dict:
    """Append every judge's judgement of each reply in `replies` not judged in `path` yet."""
    post_text = {(p.culture, p.post_id): p.text for p in run.posts}
    check_provenance(path, _judge_provenance(run))
    done = {key(r) for r in read_records(path)}
    todo = [r for r in read_records(replies) if key(r) not in done]
    if todo:
        judges = {label: run.judge(spec) for label, spec in run.judge_specs().items()}
        size = run.config.judge.replies_per_batch
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            items = [(post_text[r["culture"], r["post_id"]], r["reply"], r["error"])
                     for r in chunk]
            found = {label: judge.judge(items) for label, judge in judges.items()}
            append_records(path, [{"strategy": r["strategy"], "culture": r["culture"],
                                   "post_id": r["post_id"],
                                   "judges": {label: results[i] for label, results in found.items()}}
                                  for i, r in enumerate(chunk)])
            log.info(f"care: {path.name}: {len(done) + start + len(chunk)}/{len(done) + len(todo)}"
                     f" replies judged")
    return judge_facts(read_records(path))


def judge_facts(records: list[dict]) -> dict:
    facts = {"judged": len(records)}
    for label in (records[0]["judges"] if records else {}):
        scores = [r["judges"][label]["normalised"] for r in records]
        known = [s for s in scores if s is not None]
        facts[label] = {"unscorable": len(scores) - len(known),
                        "mean_normalised": round(float(np.mean(known)), 4) if known else None}
    return facts
