"""The pair-building stages over a `PairsRun`; each returns its summary facts (the runner
writes them to `summary.json`). See `jaxcult.recipes.pairs` for the files they write."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np

from jaxcult.data.preference import check_prompt
from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError
from jaxcult.generation.prompts import as_chat
from jaxcult.own_files import read_json_object
from jaxcult.recipes.loaded_models import LoadedModels
from jaxcult.recipes.pairs.config import PairsConfig
from jaxcult.recipes.pairs.judges import LogProbJudge, RemoteLogProbJudge
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records
from jaxcult.remote.settings import RemoteModel, model_label
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)

STREAM_STRIDE = 1 << 20  # generation batch indices reserved per prompt batch (resume-stable)


def read_prompts(path: Path) -> list[dict]:
    """The prompt records, each with an `id` (its line number unless given); one line naming
    file:line for a bad one."""
    def check(record: Any, where: str) -> dict:
        check_prompt(record, where)
        return {"id": str(record.get("id", where.rsplit(":", 1)[1])), **record}

    records = read_checked_jsonl(path, check)
    seen: set[str] = set()
    for record in records:
        if record["id"] in seen:
            raise UserError(f"{path}: prompt id {record['id']!r} appears twice")
        seen.add(record["id"])
    return records


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class PairsRun:
    """A resolved pairs config with its prompts, output folder and loaded models."""

    def __init__(self, config: PairsConfig, root: Path, out: Path,
                 models: dict[str, tuple[Any, Any]] | None = None) -> None:
        self.config, self.root, self.out = config, root, out
        self.prompts_file = self.path(config.prompts)
        self.prompts = read_prompts(self.prompts_file)
        self.loaded = LoadedModels("pairs", models)

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def model(self, name: str, adapter: Path | None = None) -> tuple[Any, Any]:
        """(model, tokenizer) by asset name or folder, with a PEFT adapter attached."""
        return self.loaded.get(name, adapter)

    def judge(self) -> LogProbJudge | RemoteLogProbJudge:
        settings = self.config.judge
        if isinstance(settings.model, RemoteModel):
            from jaxcult.remote.chat_model import RemoteChatModel

            log.info(f"pairs: judging with {settings.model.model} at {settings.model.endpoint}")
            return RemoteLogProbJudge(settings, RemoteChatModel(
                settings.model, self.out / "remote-cache.jsonl"))
        return LogProbJudge(settings, *self.model(settings.model or self.config.sample.model))

    def conversation(self, record: dict) -> list[dict] | str:
        """The prompt as the sampled model reads it (and as training templates it)."""
        if "messages" in record:
            return record["messages"]
        settings = self.config.sample
        return as_chat(record["prompt"], settings.system) if settings.chat else record["prompt"]


def sample(run: PairsRun) -> dict:
    """`samples.jsonl`: per prompt, its record and N sampled replies (text, finish reason)."""
    from jaxcult.generation.api import generate_ids
    from jaxcult.generation.engine import Generator
    from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults
    from jaxcult.generation.prompts import encode

    settings = run.config.sample
    path = run.out / "samples.jsonl"
    check_provenance(path, {"stage": "sample", "model": settings.model, "prompts": _hash(
        run.prompts_file), "samples_per_prompt": settings.samples_per_prompt, "chat": settings.chat,
        "system": settings.system,
        "prompts_per_batch": settings.prompts_per_batch,
        "generation": settings.generation.provenance()})
    done = {r["id"] for r in read_records(path)}
    size = settings.prompts_per_batch
    batches = [run.prompts[i:i + size] for i in range(0, len(run.prompts), size)]
    generator = None
    for number, batch in enumerate(batches):
        todo = [r for r in batch if r["id"] not in done]
        if not todo:
            continue
        if generator is None:
            generator = Generator(*run.model(settings.model), with_model_defaults(
                settings.generation, load_generation_defaults(settings.model)))
        tokenizer = generator.tokenizer
        ids = encode([run.conversation(r) for r in todo], tokenizer)
        repeated = [prompt for prompt in ids for _ in range(settings.samples_per_prompt)]
        completions = generate_ids(generator, repeated, first_batch=number * STREAM_STRIDE)
        n = settings.samples_per_prompt
        append_records(path, [{**record, "replies": [
            {"text": c.text, "finish_reason": c.finish_reason, "error": c.error}
            for c in completions[i * n:(i + 1) * n]]} for i, record in enumerate(todo)])
        log.info(f"pairs sample: {sum(len(b) for b in batches[:number + 1])}/{len(run.prompts)} "
                 f"prompts")
    records = _stage_input(run, "samples.jsonl", "sample")
    replies = [reply for r in records for reply in r["replies"]]
    return {"prompts": len(records), "replies": len(replies),
            "failed": sum(reply["error"] is not None for reply in replies),
            "cut_at_max_new_tokens": sum(reply["finish_reason"] == "length" for reply in replies)}


def _stage_input(run: PairsRun, name: str, made_by: str) -> list[dict]:
    records = read_records(run.out / name)
    if not records:
        raise UserError(f"{run.out / name}: no records; run `jaxcult pairs {made_by}` first")
    wanted = {r["id"] for r in run.prompts}
    return [r for r in records if r["id"] in wanted]


def _judge_provenance(run: PairsRun) -> dict:
    settings = run.config.judge
    return {"stage": "judge", "model": model_label(settings.model or run.config.sample.model),
            "judge": settings.model_dump(mode="json", exclude={"model"})}


def judge(run: PairsRun) -> dict:
    """`judgements.jsonl`: per prompt, each reply's judgement (score, option mass, or why it
    is unscorable)."""
    path = run.out / "judgements.jsonl"
    check_provenance(path, _judge_provenance(run))
    done = {r["id"] for r in read_records(path)}
    todo = [r for r in _stage_input(run, "samples.jsonl", "sample") if r["id"] not in done]
    if todo:
        judge = run.judge()
        for start in range(0, len(todo), 16):
            chunk = todo[start:start + 16]
            items = [(r, reply["text"], reply["error"]) for r in chunk for reply in r["replies"]]
            found = iter(judge.judge(items))
            append_records(path, [{"id": r["id"], "judgements": [
                next(found).as_dict() for _ in r["replies"]]} for r in chunk])
            log.info(f"pairs judge: {len(done) + start + len(chunk)}/{len(done) + len(todo)} "
                     f"prompts")
    judged = [j for r in _stage_input(run, "judgements.jsonl", "judge") for j in r["judgements"]]
    scores = [j["score"] for j in judged if j["score"] is not None]
    low = sum(j["score"] is None and j["option_mass"] > 0 for j in judged)
    if low > len(judged) / 2:
        log.warning(f"pairs judge: {low} of {len(judged)} judgements put little probability on the "
                    f"options; the judge may expect another answer start (judge.answer_prefix "
                    f"{run.config.judge.answer_prefix!r}: try it with or without a trailing space)")
    reasons: dict[str, int] = {}
    for j in judged:
        if j["unscorable"]:
            reason = j["unscorable"].split(" (")[0].split(" got ")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"judged": len(judged), "unscorable": len(judged) - len(scores),
            "unscorable_reasons": reasons,
            "mean_score": round(float(np.mean(scores)), 4) if scores else None}


def pairs_of(replies: list[dict], judgements: list[dict], pairing: str, margin: float
             ) -> tuple[list[tuple[int, int]], str | None]:
    """(chosen index, rejected index) pairs of one prompt's replies, or why there is none:
    replies are distinct texts with a score; a pair needs scores at least `margin` apart."""
    scored, texts = [], set()
    for index, (reply, judgement) in enumerate(zip(replies, judgements)):
        text = reply["text"].strip()
        if judgement["score"] is not None and text not in texts:
            texts.add(text)
            scored.append(index)
    if len(scored) < 2:
        return [], "fewer than two distinct scored replies"
    scored.sort(key=lambda i: -judgements[i]["score"])
    score = lambda i: judgements[i]["score"]  # noqa: E731
    if pairing == "best_worst":
        best, worst = scored[0], scored[-1]
        return ([(best, worst)], None) if score(best) - score(worst) >= margin else ([], "tie")
    found = [(a, b) for n, a in enumerate(scored) for b in scored[n + 1:]
             if score(a) - score(b) >= margin]
    return found, None if found else "tie"


def _held_out(run: PairsRun) -> set[str]:
    settings = run.config.build
    ids = sorted(r["id"] for r in run.prompts)
    random.Random(settings.seed).shuffle(ids)
    return set(ids[:round(len(ids) * settings.validation_share)])


def build(run: PairsRun) -> dict:
    """`pairs/{train,validation}.jsonl` (dataset `preference_jsonl`): chosen and rejected
    replies with both scores and provenance; `pairs/report.json` counts what made no pair."""
    settings = run.config.build
    samples = {r["id"]: r for r in _stage_input(run, "samples.jsonl", "sample")}
    judged = {r["id"]: r["judgements"] for r in _stage_input(run, "judgements.jsonl", "judge")}
    missing = [i for i in samples if i not in judged]
    if missing:
        raise UserError(f"{run.out / 'judgements.jsonl'}: prompt {missing[0]!r} (and "
                        f"{len(missing) - 1} more) not judged yet; run `jaxcult pairs judge`")
    held_out = _held_out(run)
    made_by = {"sampler": run.config.sample.model, **_judge_provenance(run)}
    made_by.pop("stage")
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    skipped: dict[str, int] = {}
    for record in run.prompts:
        sampled = samples.get(record["id"])
        if sampled is None:
            continue
        found, why = pairs_of(sampled["replies"], judged[record["id"]], settings.pairing,
                              settings.min_margin)
        if why:
            skipped[why] = skipped.get(why, 0) + 1
        prompt = run.conversation(record)
        key = {"prompt": prompt} if isinstance(prompt, str) else {"messages": prompt}
        extra = {k: record[k] for k in ("language",) if k in record}
        for chosen, rejected in found:
            splits["validation" if record["id"] in held_out else "train"].append({
                "id": record["id"], **key, **extra,
                "chosen": sampled["replies"][chosen]["text"],
                "rejected": sampled["replies"][rejected]["text"],
                "scores": {"chosen": judged[record["id"]][chosen]["score"],
                           "rejected": judged[record["id"]][rejected]["score"]},
                "made_by": made_by})
    folder = run.out / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        if not rows:
            raise UserError(f"pairs build: no {name} pair (prompts without a pair: {skipped}); "
                            f"sample more replies per prompt, lower build.min_margin or change "
                            f"build.validation_share")
        write_text_atomic(folder / f"{name}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    facts = {"prompts": len(samples), "held_out_prompts": len(held_out),
             "pairs": {name: len(rows) for name, rows in splits.items()},
             "prompts_without_pair": skipped,
             "mean_margin": round(float(np.mean([r["scores"]["chosen"] - r["scores"]["rejected"]
                                                 for rows in splits.values() for r in rows])), 4),
             "build": settings.model_dump(mode="json")}
    write_text_atomic(folder / "report.json", json.dumps(facts, indent=1) + "\n")
    return facts


def _adapter_folder(run: PairsRun) -> Path:
    return run.out / "adapter"


def training_config(run: PairsRun):
    from jaxcult.config_loading import load_config
    from jaxcult.recipes.adapters import check_lora_export

    settings = run.config.train
    if settings is None:
        raise UserError("pairs train: the config has no `train` section (train.config: the YAML "
                        "of the preference run)")
    data = (run.out / "pairs").resolve()
    config = load_config(run.path(settings.config), [
        *settings.overrides, "task.name=preference", "data.name=preference_jsonl",
        f"data.manual_dir={data}", "data.eval_split=validation", f"name={run.config.name}"])
    check_lora_export(config, settings.export, run.path(settings.config))
    return config


def train(run: PairsRun) -> dict:
    """`adapter/{run,peft}`: the preference run on the built pairs (resumes; finished runs are
    not trained again)."""
    from jaxcult.recipes.adapters import train_adapter

    if not (run.out / "pairs" / "train.jsonl").exists():
        raise UserError(f"{run.out / 'pairs'}: no pairs; run `jaxcult pairs build` first")
    config = training_config(run)
    return train_adapter(config, _adapter_folder(run), run.config.train.export, "pairs")


def evaluate(run: PairsRun) -> dict:
    """`evaluation.json`: the judge's mean score of greedy replies to the held-out prompts,
    from the base model and from the trained adapter."""
    from jaxcult.generation.api import generate
    from jaxcult.generation.model_defaults import load_generation_defaults, with_model_defaults

    adapter = _adapter_folder(run) / "peft"
    if not (adapter / "adapter_config.json").exists():
        raise UserError(f"{adapter}: no trained adapter; run `jaxcult pairs train` (with "
                        f"train.export: true) first")
    held_out = _held_out(run)
    records = [r for r in run.prompts if r["id"] in held_out]
    if not records:
        raise UserError("pairs evaluate: no held-out prompt (build.validation_share is 0)")
    judge = run.judge()
    settings = with_model_defaults(run.config.evaluate.generation,
                                   load_generation_defaults(run.config.sample.model))
    results = {}
    for label, source in (("base", None), ("trained", adapter)):
        model, tokenizer = run.model(run.config.sample.model, source)
        replies = generate(model, tokenizer, [run.conversation(r) for r in records], settings)
        judged = judge.judge([(r, c.text, c.error) for r, c in zip(records, replies)])
        scores = [j.score for j in judged if j.score is not None]
        results[label] = {"mean_score": round(float(np.mean(scores)), 4) if scores else None,
                          "scored": len(scores), "unscorable": len(judged) - len(scores),
                          "replies": [{"id": r["id"], "reply": c.text, **j.as_dict()}
                                      for r, c, j in zip(records, replies, judged)]}
    summary = read_json_object(_adapter_folder(run) / "run" / "summary.json", ("metrics",))
    facts = {"prompts": len(records), **{label: {k: v for k, v in r.items() if k != "replies"}
                for label, r in results.items()},
             "held_out_pairs": summary.get("metrics", {})}
    replies = {label: r["replies"] for label, r in results.items()}
    write_text_atomic(run.out / "evaluation.json", json.dumps(
        {**facts, "generation": settings.model_dump(mode="json"), "replies": replies}, indent=1,
        ensure_ascii=False) + "\n")
    return facts
