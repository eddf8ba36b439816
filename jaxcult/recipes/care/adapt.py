"""Beyond prompting: adapters that give culturally sensitive replies from the short prompt.

distill: per culture (or one for all), a LoRA trained on (student prompt -> teacher strategy's
reply) for the training posts, so the adapter replies like the long combined prompt without
it. prefer: a preference adapter (the run's `task.objective`, DPO by default) on pairs of the
best- and worst-judged replies of any strategy per training post, under the student prompt.
Each adapter then answers its held-out posts with the student prompt; those replies are judged
like the prompted strategies' (strategies `distilled` and `preferred` in the report).

Files, under `distill/` and `prefer/`: `data/<group>/{train,validation}.jsonl`,
`adapters/<group>/{run,peft}`, `replies.jsonl`, `judgements.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.recipes.adapters import check_lora_export, data_provenance, train_adapter
from jaxcult.recipes.care.replies import (
    STRATEGY_STRIDE,
    judge_replies,
    key,
    reply_facts,
    write_replies,
)
from jaxcult.recipes.care.run import CareRun
from jaxcult.recipes.care.schema import AnnotatedPost
from jaxcult.recipes.stage_files import check_provenance, read_records
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

LABELS = {"distill": "distilled", "prefer": "preferred"}


def _groups(run: CareRun, per_culture: bool) -> dict[str, list[str]]:
    return ({c: [c] for c in run.config.cultures} if per_culture
            else {"all": list(run.config.cultures)})


def _check_may_train(run: CareRun, stage: str) -> None:
    if not run.config.posts_may_train:
        raise UserError(f"care {stage}: trains on prompts that contain the posts; set "
                        f"posts_may_train: true only if their terms allow it (Reddit's forbid "
                        f"training without a separate agreement)")


def _read_by_key(path: Path, made_by: str) -> dict[tuple[str, str, str], dict]:
    records = read_records(path)
    if not records:
        raise UserError(f"{path}: no records; run `jaxcult care {made_by}` first")
    return {key(r): r for r in records}


def _train_digest(run: CareRun, settings) -> str:
    text = run.path(settings.train.config).read_text(encoding="utf-8")
    return hashlib.sha256(json.dumps([text, settings.train.overrides]).encode()).hexdigest()[:16]


def _train_group(run: CareRun, stage: str, group: str, rows: dict[str, list[dict]],
                 overrides: list[str]) -> dict:
    """Write the group's data, train (or resume, or reuse) its adapter; the run's facts."""
    from jaxcult.config_loading import load_config

    settings = getattr(run.config, stage)
    for split, records in rows.items():
        if not records:
            raise UserError(f"care {stage}: group {group} has no {split} example (posts "
                            f"held out by split.held_out_share; replies without text, ties "
                            f"and failures are skipped)")
    data = (run.out / stage / "data" / group).resolve()
    data.mkdir(parents=True, exist_ok=True)
    for split, records in rows.items():
        write_text_atomic(data / f"{split}.jsonl", "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    where = run.path(settings.train.config)
    config = load_config(where, [*settings.train.overrides, *overrides,
                                 f"data.manual_dir={data}", "data.eval_split=validation",
                                 f"name={run.config.name}-{stage}-{group}"])
    if not settings.train.export:
        raise UserError(f"{where}: care {stage} generates with the exported adapter; set "
                        f"{stage}.train.export: true")
    check_lora_export(config, True, where)
    if config.model.name != run.config.generate.model:
        raise UserError(f"{where}: trains model.name={config.model.name!r}, but the replies "
                        f"come from generate.model={run.config.generate.model!r}; use the same")
    folder = run.out / stage / "adapters" / group
    check_provenance(folder / "run", data_provenance(data))
    return train_adapter(config, folder, True, f"care {stage} {group}")


def _adapted(run: CareRun, stage: str,
             build: Callable[[list[str], set[tuple[str, str]]], dict[str, list[dict]]],
             overrides: list[str]) -> dict:
    """Per group: build its examples, train its adapter, reply to its held-out posts with the
    student prompt, judge those replies."""
    settings = getattr(run.config, stage)
    held_out = run.held_out()
    student = run.strategies[settings.student]
    folder = run.out / stage
    provenance = {"stage": stage, "model": run.config.generate.model, "data": run.data_digest(),
                  "student": [student.system, student.user], "train": _train_digest(run, settings),
                  "settings": settings.model_dump(mode="json", exclude={"train"}),
                  "split": run.config.split.model_dump(mode="json"),
                  "generation": run.config.generate.generation.model_dump(mode="json")}
    facts: dict = {"groups": {}}
    for index, (group, cultures) in enumerate(_groups(run, settings.per_culture).items()):
        rows = build(cultures, held_out)
        trained = _train_group(run, stage, group, rows, overrides)
        posts = [p for p in run.posts if p.culture in cultures and (p.culture, p.post_id) in held_out]
        adapter = Path(trained["adapter"])
        write_replies(run, folder / "replies.jsonl", provenance,
                      [(LABELS[stage], student, post) for post in posts], adapter,
                      stream=index * STRATEGY_STRIDE)
        run.loaded.forget(run.config.generate.model, adapter)
        facts["groups"][group] = {**{f"{split}_examples": len(r) for split, r in rows.items()},
                                  "held_out_posts": len(posts), **trained}
    facts["replies"] = reply_facts(read_records(folder / "replies.jsonl"))
    facts["judged"] = judge_replies(run, folder / "replies.jsonl", folder / "judgements.jsonl")
    return facts


def _split(held_out: set[tuple[str, str]], post: AnnotatedPost) -> str:
    return "validation" if (post.culture, post.post_id) in held_out else "train"


def distill_adapters(run: CareRun) -> dict:
    """The distill stage (see the module docstring)."""
    settings = run.config.distill
    if settings is None:
        raise UserError("care distill: the config has no `distill` section (teacher, student, "
                        "train.config)")
    _check_may_train(run, "distill")
    replies = _read_by_key(run.out / "replies.jsonl", "generate")
    student = run.strategies[settings.student]

    def build(cultures: list[str], held_out: set[tuple[str, str]]) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {"train": [], "validation": []}
        for post in (p for p in run.posts if p.culture in cultures):
            reply = replies.get((settings.teacher, post.culture, post.post_id))
            if reply is None:
                raise UserError(f"{run.out / 'replies.jsonl'}: no {settings.teacher} reply to "
                                f"{post.culture} post {post.post_id}; run `jaxcult care generate`")
            if reply["error"] is None and reply["reply"].strip():
                rows[_split(held_out, post)].append({"messages": [
                    *student.chat(post), {"role": "assistant", "content": reply["reply"]}]})
        return rows

    return _adapted(run, "distill", build, ["data.name=chat_jsonl", "task.name=causal_lm"])


def best_and_worst(candidates: list[tuple[float, str]], margin: float
                   ) -> tuple[tuple[float, str], tuple[float, str]] | str:
    """The best and worst (score, reply) of distinct replies, or why there is no pair."""
    distinct: dict[str, float] = {}
    for score, text in candidates:
        distinct.setdefault(text.strip(), score)
    if len(distinct) < 2:
        return "fewer than two distinct scored replies"
    ranked = sorted(((s, t) for t, s in distinct.items()), key=lambda pair: -pair[0])
    best, worst = ranked[0], ranked[-1]
    return (best, worst) if best[0] - worst[0] >= margin else "tie"


def preference_adapters(run: CareRun) -> dict:
    """The prefer stage (see the module docstring)."""
    settings = run.config.prefer
    if settings is None:
        raise UserError("care prefer: the config has no `prefer` section (student, train.config)")
    _check_may_train(run, "prefer")
    replies = _read_by_key(run.out / "replies.jsonl", "generate")
    judged = _read_by_key(run.out / "judgements.jsonl", "judge")
    primary = next(iter(run.judge_specs()))
    student = run.strategies[settings.student]
    skipped: dict[str, int] = {}

    def build(cultures: list[str], held_out: set[tuple[str, str]]) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {"train": [], "validation": []}
        for post in (p for p in run.posts if p.culture in cultures):
            candidates = []
            for strategy in run.config.strategies:
                found = (strategy, post.culture, post.post_id)
                if found not in judged:
                    raise UserError(f"{run.out / 'judgements.jsonl'}: the {strategy} reply to "
                                    f"{post.culture} post {post.post_id} is not judged; run "
                                    f"`jaxcult care judge`")
                score = judged[found]["judges"][primary]["normalised"]
                if score is not None and replies[found]["reply"].strip():
                    candidates.append((score, replies[found]["reply"]))
            pair = best_and_worst(candidates, settings.min_margin)
            if isinstance(pair, str):
                skipped[pair] = skipped.get(pair, 0) + 1
                continue
            (best, chosen), (worst, rejected) = pair
            rows[_split(held_out, post)].append({
                "messages": student.chat(post), "chosen": chosen, "rejected": rejected,
                "scores": {"chosen": best, "rejected": worst}})
        return rows

    facts = _adapted(run, "prefer", build, ["data.name=preference_jsonl", "task.name=preference"])
    return {**facts, "posts_without_pair": skipped}
