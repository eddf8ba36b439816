"""Visual question answering: a question + its image's visual tokens -> one of the answers.

The dataset's records carry each image's `VisualTokens`; tokenisation stores every image of a
split once (`VisualTable`) and gathers them per batch. The model is the encoder as a single-
stream vision-language model (`models.vision_language`). Options (`task.options`):

- `head`: `iglue` (pooled first token -> IGLUE's classifier) or `sequence` (one more
  Transformer layer over the multimodal output first);
- `loss`: `bce` (IGLUE: BCE-with-logits on the answer scores x number of answers) or `ce`;
- `max_regions` (36), `location_dim` (5 or 7), `global_token` (prepend the mean feature);
- `type_token`: `none` or `gold` (the question's structural type, e.g. "verify", prepended to
  the question: oracle information, reported as such);
- `probes`: evaluation-only views, `blind` (no visual tokens) and `shuffled` (every question
  paired with another image of its split, drawn with `shuffle_seed`): modality-bias probes;
- for datasets that give pixels (`image`) rather than features: `backbone` (default
  `efficientnet-lite0`), `image_size` (pixels the images are resized to, default 128: (size/32)^2
  grid tokens) and `feature_cache` (folder of the cached features).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcult.config import RunConfig
from jaxcult.data.batching import Split
from jaxcult.data.visual import LOCATION_DIMS, ImageRows, VisualTable
from jaxcult.errors import UserError
from jaxcult.models.vision_language import HEADS, VisionLanguageModel
from jaxcult.tasks.base import Task, categorical_log_probs, register_task

VISUAL_KEYS = ("visual_features", "visual_locations", "visual_mask")
PROBES = ("blind", "shuffled")


def _choice(options: dict, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(options.get(key, default))
    if value not in allowed:
        raise UserError(f"task.options.{key}: expected one of {', '.join(allowed)}, found {value!r}")
    return value


@register_task("vqa")
class VisualQuestionAnswering(Task):
    record_formats = ("vqa",)
    sequence_keys = ("input_ids", "attention_mask")
    evaluator = "vqa"
    option_names = ("head", "loss", "max_regions", "location_dim", "global_token", "type_token",
                    "probes", "shuffle_seed", "backbone", "image_size", "feature_cache")

    def __init__(self, config, labels=()) -> None:
        super().__init__(config, labels)
        options = config.options
        self.head = _choice(options, "head", "iglue", HEADS)
        self.loss_kind = _choice(options, "loss", "bce", ("bce", "ce"))
        self.type_token = _choice(options, "type_token", "none", ("none", "gold"))
        self.max_regions = int(options.get("max_regions", 36))
        self.location_dim = int(options.get("location_dim", 5))
        if self.location_dim not in LOCATION_DIMS or self.max_regions < 1:
            raise UserError(f"task.options: location_dim must be 5 or 7 and max_regions >= 1 "
                            f"(found {self.location_dim}, {self.max_regions})")
        self.global_token = bool(options.get("global_token", False))
        probes = options.get("probes", [])
        self.probes = tuple([probes] if isinstance(probes, str) else probes)
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise UserError(f"task.options.probes: unknown probe {unknown[0]!r} (known: "
                            f"{', '.join(PROBES)})")
        self.shuffle_seed = int(options.get("shuffle_seed", 0))
        shuffled = tuple(f"shuffled_{k}" for k in VISUAL_KEYS) if "shuffled" in self.probes else ()
        self.batch_keys = ("input_ids", "attention_mask", *VISUAL_KEYS, *shuffled, "labels")
        self.image_backbone = str(options.get("backbone", "efficientnet-lite0"))
        self.image_size = int(options.get("image_size", 128))
        if self.image_size < 32:
            raise UserError(f"task.options.image_size: at least 32 pixels (one grid cell), found "
                            f"{self.image_size}")
        self.feature_cache = options.get("feature_cache")
        self.feature_dim: int | None = None

    def question_text(self, record: dict) -> str:
        if self.type_token == "gold":
            kind = (record.get("types") or {}).get("structural")
            if not kind:
                raise UserError(f"question {record['question_id']}: task.options.type_token=gold "
                                f"needs its structural type, which the dataset does not give")
            return f"{kind} : {record['question']}"
        return record["question"]

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
        enc = tokenizer([self.question_text(r) for r in records], truncation=True,
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
        grid = grid_features(pixels, backbone=self.image_backbone, image_size=self.image_size,
                             cache_dir=Path(str(self.feature_cache)).expanduser()
                             if self.feature_cache else None)
        return {image_id: grid[image_id] for image_id in first}

    def _other_images(self, rows: np.ndarray, count: int) -> np.ndarray:
        """Each row's image replaced by another image of the split (a seeded draw)."""
        if count < 2:
            return rows
        draw = np.random.default_rng(self.shuffle_seed).integers(0, count - 1, len(rows))
        return np.where(draw >= rows, draw + 1, draw)

    def build_model(self, backbone, config: RunConfig):
        if self.feature_dim is None:
            raise UserError("vqa: the model is built after the training split is tokenised")
        return VisionLanguageModel(backbone, self.num_labels, feature_dim=self.feature_dim,
                                   location_dim=self.location_dim, head=self.head,
                                   seed=config.trainer.seed)

    @staticmethod
    def _run(model, batch: dict, prefix: str, dropout_key=None) -> jax.Array:
        visual = [batch[prefix + key] for key in VISUAL_KEYS]
        return model(batch["input_ids"], batch["attention_mask"], *visual, dropout_key=dropout_key)

    def forward(self, model, batch, dropout_key):
        return self._run(model, batch, "", dropout_key)

    def evaluation_outputs(self, model, batch: dict):
        """The answer logits, plus each probe's logits (blind: no visual token attended)."""
        outputs = {"logits": self.forward(model, batch, None)}
        if "blind" in self.probes:
            blind = {**batch, "visual_mask": jnp.zeros_like(batch["visual_mask"])}
            outputs["blind"] = self._run(model, blind, "")
        if "shuffled" in self.probes:
            outputs["shuffled"] = self._run(model, batch, "shuffled_")
        return outputs

    def loss(self, outputs, batch):
        logits = outputs.astype(jnp.float32)
        if self.loss_kind == "bce":
            targets = jax.nn.one_hot(batch["labels"], logits.shape[-1])
            loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean() * logits.shape[-1]
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return loss, (logits.argmax(-1) == batch["labels"]).mean()

    def log_probs(self, outputs, batch):
        return categorical_log_probs(outputs, batch)
