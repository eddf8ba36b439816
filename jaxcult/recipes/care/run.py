"""A resolved `jaxcult care` config: the posts it uses, its strategies, metrics, judges and
models, and the output folder (the context every care stage runs on)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from jaxcult.errors import UserError
from jaxcult.recipes.care.config import CareConfig
from jaxcult.recipes.care.judge import CareJudge
from jaxcult.recipes.care.rubrics import load_metrics
from jaxcult.recipes.care.schema import AnnotatedPost, counts, read_annotations, read_post_texts
from jaxcult.recipes.care.strategies import load_strategies
from jaxcult.recipes.loaded_models import LoadedModels
from jaxcult.remote.settings import RemoteModel, model_label


class CareRun:
    """The care recipe's context: everything is read and checked when it is made, so a bad
    file stops a stage before any model loads."""

    def __init__(self, config: CareConfig, root: Path, out: Path,
                 models: dict[str, tuple[Any, Any]] | None = None) -> None:
        self.config, self.root, self.out = config, root, out
        self.loaded = LoadedModels("care", models)
        students = [s.student for s in (config.distill, config.prefer) if s is not None]
        names = list(dict.fromkeys([*config.strategies, *students]))
        self.strategies = load_strategies(names, self.optional_path(config.strategy_templates))
        self.metrics = load_metrics(config.judge.metrics, self.optional_path(config.judge.rubrics))
        self.annotated = {culture: read_annotations(self.path(config.annotations), culture)
                          for culture in config.cultures}
        texts = read_post_texts(self.path(config.posts))
        self.missing_text = [p.post_id for posts in self.annotated.values() for p in posts
                             if p.post_id not in texts]
        self.posts = self._used(texts)

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def optional_path(self, relative: str | None) -> Path | None:
        return None if relative is None else self.path(relative)

    def _used(self, texts: dict[str, str]) -> list[AnnotatedPost]:
        used = []
        for culture, posts in self.annotated.items():
            found = [replace(p, text=texts[p.post_id]) for p in posts if p.post_id in texts]
            if self.config.posts_per_culture is not None:
                found = found[:self.config.posts_per_culture]
            if not found:
                raise UserError(f"{self.path(self.config.posts)}: no text for any {culture} post "
                                f"(the file's post_id values must match the annotations')")
            used.extend(found)
        return used

    def counts(self) -> dict:
        return {culture: counts(posts) for culture, posts in self.annotated.items()}

    def data_digest(self) -> str:
        """What the replies depend on in the data: the used posts, texts and annotations."""
        text = json.dumps([asdict(p) for p in self.posts], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def held_out(self) -> set[tuple[str, str]]:
        """(culture, post_id) of the posts held out from adapter training, per culture."""
        settings = self.config.split
        chosen = set()
        for culture in self.config.cultures:
            ids = sorted(p.post_id for p in self.posts if p.culture == culture)
            if len(ids) < 2:
                raise UserError(f"split: culture {culture} has {len(ids)} post with text; "
                                f"training and held-out posts need at least 2")
            random.Random(f"{settings.seed}:{culture}").shuffle(ids)
            count = min(len(ids) - 1, max(1, round(len(ids) * settings.held_out_share)))
            chosen.update((culture, i) for i in ids[:count])
        return chosen

    def model(self, name: str, adapter: Path | None = None) -> tuple[Any, Any]:
        """(model, tokenizer) by asset name or folder, with a PEFT adapter attached."""
        return self.loaded.get(name, adapter)

    def judge_specs(self) -> dict[str, Any]:
        """Label -> model spec of each configured judge (the first is the primary)."""
        settings = self.config.judge
        specs = [settings.model or self.config.generate.model]
        if settings.second_model is not None:
            specs.append(settings.second_model)
        labels = [json.dumps(model_label(s)) if isinstance(s, RemoteModel) else s for s in specs]
        if len(set(labels)) != len(labels):
            raise UserError("judge.second_model is the same model as the first judge")
        return dict(zip(labels, specs))

    def judge(self, spec: Any) -> CareJudge:
        from jaxcult.recipes.pairs.judges import LogProbJudge, RemoteLogProbJudge

        if isinstance(spec, RemoteModel):
            from jaxcult.remote.chat_model import RemoteChatModel

            client = RemoteChatModel(spec, self.out / "remote-cache.jsonl")
            return CareJudge(self.config.judge, self.metrics, spec,
                             lambda settings: RemoteLogProbJudge(settings, client))
        model, tokenizer = self.model(spec)
        return CareJudge(self.config.judge, self.metrics, spec,
                         lambda settings: LogProbJudge(settings, model, tokenizer))
