"""The care stages that read the posts, generate the strategies' replies and judge them; each
returns its summary facts (the runner writes them to `summary.json`). distill and prefer are
in `care.adapt`, report in `care.report`. See `jaxcult.recipes.care` for the files."""

from __future__ import annotations

import json
import logging

from jaxcult.errors import UserError
from jaxcult.recipes.care.replies import (
    STRATEGY_STRIDE,
    judge_replies,
    reply_facts,
    template_digest,
    write_replies,
)
from jaxcult.recipes.care.run import CareRun
from jaxcult.recipes.stage_files import read_records
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)


def read(run: CareRun) -> dict:
    """Counts of the annotations and of the posts the run uses; posts without text by id."""
    if run.missing_text:
        log.warning(f"care: {len(run.missing_text)} annotated posts have no text in "
                    f"{run.path(run.config.posts)} and are left out (first: "
                    f"{', '.join(run.missing_text[:5])})")
    used = {c: sum(p.culture == c for p in run.posts) for c in run.config.cultures}
    write_text_atomic(run.out / "posts-used.json", json.dumps(
        {c: [p.post_id for p in run.posts if p.culture == c] for c in run.config.cultures},
        indent=1) + "\n")
    log.info(f"care: using {len(run.posts)} posts ({', '.join(f'{c} {n}' for c, n in used.items())})")
    return {"annotations": run.counts(), "posts_used": used,
            "posts_without_text": {"count": len(run.missing_text), "ids": run.missing_text[:20]}}


def generate(run: CareRun) -> dict:
    """`replies.jsonl`: one reply per (strategy, post) from the supporter model."""
    settings = run.config.generate
    strategies = [run.strategies[name] for name in run.config.strategies]
    provenance = {"stage": "generate", "model": settings.model, "data": run.data_digest(),
                  "strategies": {s.name: template_digest(s) for s in strategies},
                  "posts_per_batch": settings.posts_per_batch,
                  "generation": settings.generation.provenance()}
    jobs = [(s.name, s, post) for s in strategies for post in run.posts]
    path = run.out / "replies.jsonl"
    for index, strategy in enumerate(strategies):  # one stream per strategy: resume-stable
        write_replies(run, path, provenance, [j for j in jobs if j[1] is strategy],
                      stream=index * STRATEGY_STRIDE)
    return reply_facts(read_records(path))


def judge(run: CareRun) -> dict:
    """`judgements.jsonl`: per reply, each judge's seven metrics and normalised score."""
    replies = run.out / "replies.jsonl"
    if not read_records(replies):
        raise UserError(f"{replies}: no replies; run `jaxcult care generate` first")
    return judge_replies(run, replies, run.out / "judgements.jsonl")
