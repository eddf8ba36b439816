"""Visual question answering: a question + its image's visual tokens -> one of the answers.

The dataset's records carry each image's `VisualTokens`; tokenisation stores every image of a
split once (`VisualTable`) and gathers them per batch. The model is the encoder as a single-
stream vision-language model (`models.vision_language`). Settings (keys of `task`):

- `head`: `iglue` (pooled first token -> IGLUE's classifier) or `sequence` (one more
  Transformer layer over the multimodal output first);
- `loss`: `bce` (IGLUE: BCE-with-logits on the answer scores x number of answers) or `ce`;
- `max_regions` (36), `location_dim` (5 or 7), `global_token` (prepend the mean feature);
- `type_token`: `none`, `gold` or `predicted`: a learned question-type token (one per GQA
  structural type seen in training) joined to the question. `gold` takes the type from the
  data (oracle information, reported as such); `predicted` is the honest variant: an auxiliary
  predictor, trained on the source language's gold types beside the answer loss, chooses it,
  and its accuracy is reported per language as `type_accuracy`;
- soft answer scores: records with `answer_scores` ({answer: score}, IGLUE's labels) are the
  BCE targets; otherwise the gold answer scores 1;
- `probes`: evaluation-only views, `blind` (no visual tokens) and `shuffled` (every question
  paired with another image of its split, drawn with `shuffle_seed`): modality-bias probes;
- for datasets that give pixels (`image`) rather than features: `backbone` (default
  `efficientnet-lite0`), `image_size` (pixels the images are resized to, default 128: (size/32)^2
  grid tokens) and `feature_cache` (folder of the cached features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import Field, field_validator

from jaxcult.config import TaskConfig
from jaxcult.data.batching import Split
from jaxcult.data.visual import LOCATION_DIMS, ImageRows, VisualTable
from jaxcult.errors import UserError
from jaxcult.models.vision_language import HEADS, TYPE_SOURCES, VisionLanguageModel
from jaxcult.tasks.base import ModelInputs, Task, categorical_log_probs, register_task

VISUAL_KEYS = ("visual_features", "visual_locations", "visual_mask")
PROBES = ("blind", "shuffled")


class VqaSettings(TaskConfig):
    head: Literal[HEADS] = Field("iglue", description="iglue: pooled first token -> IGLUE's "
                                 "classifier; sequence: one more Transformer layer first")
    loss: Literal["bce", "ce"] = "bce"
    max_regions: int = Field(36, ge=1)
    location_dim: Literal[LOCATION_DIMS] = 5
    global_token: bool = Field(False, description="prepend the mean visual feature")
    type_token: Literal[("none", *TYPE_SOURCES)] = "none"
    probes: list[Literal[PROBES]] = Field(default_factory=list, description="evaluation-only "
                                          "modality-bias views: blind, shuffled")
    shuffle_seed: int = 0
    backbone: str = Field("efficientnet-lite0", description="image backbone for datasets "
                          "that give pixels")
    image_size: int = Field(128, ge=32, description="pixels images are resized to ((size/32)^2 "
                            "grid tokens)")
    feature_cache: str | None = Field(None, description="folder of the cached grid features")

    @field_validator("probes", mode="before")
    @classmethod
    def _one_probe(cls, value):
        return [value] if isinstance(value, str) else value


@register_task("vqa")
class VisualQuestionAnswering(Task):
    Settings = VqaSettings
    record_formats = ("vqa",)
    sequence_keys = ("input_ids", "attention_mask")
    evaluator = "vqa"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = self.settings
        self.head, self.loss_kind, self.type_token = settings.head, settings.loss, settings.type_token
        self.type_names: tuple[str, ...] = ()
        self.max_regions, self.location_dim = settings.max_regions, settings.location_dim
        self.global_token, self.probes = settings.global_token, tuple(settings.probes)
        self.shuffle_seed = settings.shuffle_seed
        shuffled = tuple(f"shuffled_{k}" for k in VISUAL_KEYS) if "shuffled" in self.probes else ()
        extra = (("type_ids",) if self.type_token != "none" else ()) + (
            ("answer_ids", "answer_scores") if self.loss_kind == "bce" else ())
        self.batch_keys = ("input_ids", "attention_mask", *VISUAL_KEYS, *shuffled, "labels", *extra)
        self.image_backbone, self.image_size = settings.backbone, settings.image_size
        self.feature_cache = settings.feature_cache
        self.feature_dim: int | None = None

    def _type_ids(self, records: list[dict], name: str) -> np.ndarray:
        """Each question's structural-type index (-1: unknown); the first split tokenised (the
        training split) fixes the type vocabulary."""
        kinds = [(r.get("types") or {}).get("structural") or "" for r in records]
        if not self.type_names:
            self.type_names = tuple(sorted({k for k in kinds if k}))
            if not self.type_names:
                raise UserError(f"{name}: task.type_token={self.type_token} needs the "
                                f"training questions' structural types (types.structural), which "
                                f"the dataset does not give")
        index = {kind: i for i, kind in enumerate(self.type_names)}
        ids = np.asarray([index.get(k, -1) for k in kinds], np.int32)
        if self.type_token == "gold" and (ids < 0).any():
            row = int(np.argmax(ids < 0))
            raise UserError(f"{name}: question {records[row]['question_id']}: type_token=gold needs "
                            f"a structural type seen in training ({', '.join(self.type_names)}), "
                            f"found {kinds[row]!r}")
        return ids

    def _answer_scores(self, records: list[dict], index: dict[str, int], name: str
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Soft BCE targets as (answer ids, scores) [questions, most answers scored], -1 padded."""
        scored = [r.get("answer_scores") or {r["answer"]: 1.0} for r in records]
        width = max(len(s) for s in scored)
        ids, scores = np.full((len(records), width), -1, np.int32), np.zeros((len(records), width),
                                                                            np.float32)
        for row, (record, answers) in enumerate(zip(records, scored)):
            values = np.asarray(list(answers.values()), np.float32)
            if not ((values >= 0) & (values <= 1)).all():
                raise UserError(f"{name}: question {record['question_id']}: answer scores must lie "
                                f"in [0, 1], found {sorted(answers.values())}")
            ids[row, :len(answers)] = [index[a] for a in answers]
            scores[row, :len(answers)] = values
        return ids, scores

    def plan_batch(self, rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        raise UserError("jaxcult plan: the vqa family's batches (region features of each image) "
                        "are not planned yet; use `jaxcult train --dry-run` for its estimate")

    def tokenize(self, records, tokenizer, max_length, name) -> Split:
        if not records:
            raise UserError(f"{name}: split is empty")
        index = {label: i for i, label in enumerate(self.labels)}
        by_image = self._visual_tokens(records, name)
        images = {image_id: i for i, image_id in enumerate(by_image)}
        tokens = list(by_image.values())
        dims = {t.features.shape[1] for t in tokens}
        if self.feature_dim is None:
            self.feature_dim = dims.pop() if len(dims) == 1 else None
        if len(dims | {self.feature_dim}) != 1:
            raise UserError(f"{name}: visual features have dimension(s) {sorted(dims)}, expected "
                            f"{self.feature_dim} (as the training split)")
        table = VisualTable.build(tokens, self.max_regions, self.location_dim, self.global_token)
        rows = np.asarray([images[r["image_id"]] for r in records])
        enc = tokenizer([r["question"] for r in records], truncation=True,
                        max_length=max_length, padding="longest", return_tensors="np")
        arrays = {"input_ids": enc["input_ids"].astype(np.int32),
                  "attention_mask": enc["attention_mask"].astype(np.int32),
                  **{key: ImageRows(column, rows) for key, column in
                     zip(VISUAL_KEYS, (table.features, table.boxes, table.mask))}}
        if "shuffled" in self.probes:
            other = self._other_images(rows, len(images))
            arrays.update({f"shuffled_{key}": ImageRows(column, other) for key, column in
                           zip(VISUAL_KEYS, (table.features, table.boxes, table.mask))})
        arrays["labels"] = np.asarray([index[r["answer"]] for r in records], np.int32)
        if self.type_token != "none":
            arrays["type_ids"] = self._type_ids(records, name)
        if self.loss_kind == "bce":
            arrays["answer_ids"], arrays["answer_scores"] = self._answer_scores(records, index, name)
        meta = {"question_ids": [r["question_id"] for r in records],
                "types": [r.get("types") or {} for r in records]}
        return Split(arrays, name, meta=meta)

    def _visual_tokens(self, records: list[dict], name: str) -> dict:
        """Image id -> its visual tokens, in order of first use: the records' own features, or
        grid features of their pixels from the backbone (cached)."""
        first = {}
        for record in records:
            if record["image_id"] not in first:
                if "visual" not in record and "image" not in record:
                    raise UserError(f"{name}: question {record['question_id']}: no image or visual "
                                    f"features")
                first[record["image_id"]] = record
        if all("visual" in r for r in first.values()):
            return {image_id: r["visual"] for image_id, r in first.items()}
        from jaxcult.tasks.image_features import grid_features

        pixels = {}
        for image_id, record in first.items():
            image = record.get("image")
            if image is None or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise UserError(f"{name}: question {record['question_id']}: image {image_id!r} is "
                                f"not uint8 RGB pixels [h, w, 3]")
            pixels[image_id] = image
        sizes = {p.shape for p in pixels.values()}
        if len(sizes) > 1:
            raise UserError(f"{name}: images of different sizes {sorted(sizes)[:3]}; resize them "
                            f"to one size first")
        if self.loaders.image_backbone is None:
            raise UserError(f"{name}: the images need the image backbone {self.image_backbone!r}, "
                            f"and this task was built without a way to load it")
        grid = grid_features(pixels, self.loaders.image_backbone, backbone=self.image_backbone,
                             image_size=self.image_size, cache_dir=Path(str(self.feature_cache)).expanduser()
                             if self.feature_cache else None)
        return {image_id: grid[image_id] for image_id in first}

    def _other_images(self, rows: np.ndarray, count: int) -> np.ndarray:
        """Each row's image replaced by another image of the split (a seeded draw)."""
        if count < 2:
            return rows
        draw = np.random.default_rng(self.shuffle_seed).integers(0, count - 1, len(rows))
        return np.where(draw >= rows, draw + 1, draw)

    def build_model(self, backbone, inputs: ModelInputs):
        if self.feature_dim is None:
            raise UserError("vqa: the model is built after the training split is tokenised")
        return VisionLanguageModel(backbone, self.num_labels, feature_dim=self.feature_dim,
                                   location_dim=self.location_dim, head=self.head,
                                   seed=inputs.seed, types=len(self.type_names),
                                   type_source=self.type_token if self.type_names else "gold")

    def _run(self, model, batch: dict, prefix: str, dropout_key=None) -> dict[str, jax.Array]:
        """{"logits": answer logits, "types": type-predictor logits (predicted types only)}."""
        visual = [batch[prefix + key] for key in VISUAL_KEYS]
        answers, types = model.outputs(batch["input_ids"], batch["attention_mask"], *visual,
                                       batch.get("type_ids"), dropout_key=dropout_key)
        return {"logits": answers} if types is None else {"logits": answers, "types": types}

    def forward(self, model, batch, dropout_key):
        return self._run(model, batch, "", dropout_key)

    def evaluation_outputs(self, model, batch: dict):
        """The answer logits (and type predictions), plus each probe's answer logits (blind: no
        visual token attended)."""
        outputs = self.forward(model, batch, None)
        if "blind" in self.probes:
            blind = {**batch, "visual_mask": jnp.zeros_like(batch["visual_mask"])}
            outputs["blind"] = self._run(model, blind, "")["logits"]
        if "shuffled" in self.probes:
            outputs["shuffled"] = self._run(model, batch, "shuffled_")["logits"]
        return outputs

    def loss(self, outputs, batch):
        logits = outputs["logits"].astype(jnp.float32)
        if self.loss_kind == "bce":
            targets = (jax.nn.one_hot(batch["answer_ids"], logits.shape[-1])
                       * batch["answer_scores"][..., None]).sum(1)
            loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean() * logits.shape[-1]
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        if "types" in outputs:  # the honest type predictor learns from the source's gold types
            known = batch["type_ids"] >= 0
            nll = optax.softmax_cross_entropy_with_integer_labels(
                outputs["types"].astype(jnp.float32), jnp.maximum(batch["type_ids"], 0))
            loss = loss + jnp.where(known, nll, 0.0).sum() / jnp.maximum(known.sum(), 1)
        return loss, (logits.argmax(-1) == batch["labels"]).mean()

    def log_probs(self, outputs, batch):
        return categorical_log_probs(outputs["logits"], batch)
