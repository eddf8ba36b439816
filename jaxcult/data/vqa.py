"""Visual question answering datasets: easy-VQA (offline, images + grid features) and xGQA
(GQA questions in 8 languages over user-supplied region features).

Records (`vqa` format): `{"question_id", "question", "answer", "image_id", "types":
{"structural", "semantic"}}`, optionally `"answer_scores": {answer: score}` (soft targets,
as IGLUE's GQA / VQA labels; `answer` is the best-scored one), plus the image: `"visual":
VisualTokens` (region features) or `"image"`: uint8 RGB pixels [h, w, 3] (the task turns them
into backbone grid features). Answers
are English in every language and index the dataset's answer vocabulary (its labels).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from pydantic import Field

from jaxcult.config import DataConfig
from jaxcult.data.region_features import RegionFeatures
from jaxcult.data.registry import Dataset, DatasetInfo, Record, read_json, register_dataset
from jaxcult.data.visual import VisualTokens
from jaxcult.errors import UserError

XGQA_LANGUAGES = ("en", "de", "pt", "ru", "id", "bn", "ko", "zh")
EASY_COLORS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}


def check_answers(records: list[Record], labels: tuple[str, ...], where: str) -> list[Record]:
    """Every answer (and every soft-scored answer) in the vocabulary, or an error naming the
    question."""
    known = set(labels)
    for record in records:
        for answer in (record["answer"], *record.get("answer_scores", {})):
            if answer not in known:
                raise UserError(f"{where}: question {record['question_id']}: answer "
                                f"{answer!r} is not in the answer vocabulary ({len(labels)} answers)")
    return records


@register_dataset("easy_vqa")
class EasyVqa(Dataset):
    """easy-VQA (the `easy-vqa` asset, or `data.manual_dir` in its layout): 64x64 shape images;
    English questions, templated translations into de/fr/es/zh for zero-shot evaluation.
    Validation is every 20th training image's questions (no image shared with train). Types:
    `verify` for yes/no questions, `query` otherwise (semantic: `attr` for colour answers, `obj`
    for shapes)."""

    @staticmethod
    def _root(config: DataConfig) -> Path:
        if config.manual_dir is not None:
            return Path(config.manual_dir).expanduser()
        from jaxcult import assets

        return assets.get_asset("easy-vqa").path()

    def info(self, config: DataConfig) -> DatasetInfo:
        from jaxcult.data.tfds.easy_vqa_templates import LANGUAGES

        path = self._root(config) / "answers.txt"
        if not path.is_file():
            raise UserError(f"{path}: file not found (the easy-VQA answer list)")
        answers = tuple(a for a in path.read_text(encoding="utf-8").split() if a)
        return DatasetInfo("vqa", LANGUAGES, answers, {"visual": "grid"})

    def _questions(self, config: DataConfig, split: str, language: str) -> list[Record]:
        from jaxcult.data.tfds.easy_vqa_templates import translate

        file_split = "test" if split == "test" else "train"
        path = self._root(config) / file_split / "questions.json"
        rows = read_json(path)
        images = _easy_images(str(self._root(config)), file_split)
        labels = self.info(config).labels
        records = []
        for index, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 3):
                raise UserError(f"{path}: record {index}: expected [question, answer, image_id]")
            question, answer, image = row
            held = int(image) % 20 == 0
            if file_split == "train" and held != (split == "validation"):
                continue
            if str(image) not in images:
                raise UserError(f"{path}: record {index}: image {image} not found under "
                                f"{path.parent / 'images'}")
            kind = ("verify" if answer in ("yes", "no") else "query",
                    "" if answer in ("yes", "no") else "attr" if answer in EASY_COLORS else "obj")
            records.append({"question_id": f"{file_split}-{index}",
                            "question": question if language == "en" else translate(question, language),
                            "answer": answer, "image_id": str(image), "image": images[str(image)],
                            "types": {"structural": kind[0], "semantic": kind[1]}})
        return check_answers(records, labels, str(path))

    def read(self, config: DataConfig, language: str, split: str) -> list[Record]:
        return self._questions(config, split, language)


@cache
def _easy_images(root: str, split: str) -> dict[str, np.ndarray]:
    """Pixels of every image of one easy-VQA split, by id (read once per process)."""
    from PIL import Image

    folder = Path(root) / split / "images"
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found (easy-VQA images)")
    images = {}
    for path in sorted(folder.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        try:
            images[path.stem] = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        except OSError as error:
            raise UserError(f"{path}: not a readable image ({error})") from None
    return images


class XgqaSettings(DataConfig):
    features: str | None = Field(None, description="the region features: a folder of "
                                 "<image_id>.npz, an .h5 file or an LMDB folder (docs/vqa.md)")
    feature_dim: int = Field(2048, gt=0, description="their dimension (checked)")
    few_shot: int | None = Field(None, gt=0, description="train on xGQA's few-shot file of "
                                 "this many shots of the source language")


@register_dataset("xgqa")
class Xgqa(Dataset):
    """xGQA (Pfeiffer et al. 2022) over GQA, from `data.manual_dir` (layout of `../shared/data`):
    English training questions `gqa_iglue/datasets/gqa/annotations/{train,valid}.json` (IGLUE's
    format: `{question_id, img_id, sent, label: {answer: score}}`, optionally `types` from GQA's
    question files, which gold type tokens need); evaluation `validation` =
    `xgqa/data/few_shot/<l>/dev.json`, `test` = `xgqa/data/zero_shot/<l>/
    testdev_balanced_questions.json` (xGQA's format). Region features: `data.features`
    (`<image_id>.npz` folder, HDF5 file or LMDB folder: `data.region_features`), `feature_dim`
    (default 2048) is checked.
    `few_shot: N` trains on `xgqa/data/few_shot/<source>/train_N.json` of the source language
    instead, validated on its `dev.json` (xGQA's few-shot protocol)."""

    Settings = XgqaSettings

    def info(self, config: DataConfig) -> DatasetInfo:
        root = self.local_root(config)
        labels = read_json(root / "gqa_iglue" / "datasets" / "gqa" / "annotations"
                       / "trainval_label2ans.json")
        return DatasetInfo("vqa", XGQA_LANGUAGES, tuple(labels), {"visual": "regions"})

    def _visual(self, config: DataConfig, image_id: str) -> VisualTokens:
        if not config.features:
            raise UserError("data.features: xgqa needs the region features (a folder of "
                            "<image_id>.npz, an .h5 file or an LMDB folder; see docs/vqa.md)")
        return _region_features(str(Path(config.features).expanduser()), image_id,
                                config.feature_dim)

    def read_train(self, config: DataConfig, language: str, split: str) -> list[Record]:
        shots = config.few_shot
        if shots is not None:
            name = f"train_{shots}.json" if split == "train" else "dev.json"
            return self._xgqa_file(config, self.local_root(config) / "xgqa" / "data" / "few_shot"
                                   / language / name)
        if language != "en":
            raise UserError(f"xgqa: GQA training questions are English only (found {language!r}; "
                            f"set data.few_shot for xGQA's few-shot training files)")
        name = "train" if split == "train" else "valid"
        path = self.local_root(config) / "gqa_iglue" / "datasets" / "gqa" / "annotations" / f"{name}.json"
        records = []
        for index, row in enumerate(read_json(path)):
            if not isinstance(row, dict) or not {"question_id", "img_id", "sent", "label"} <= set(row):
                raise UserError(f"{path}: record {index}: expected question_id, img_id, sent, label")
            if not row["label"]:
                continue  # GQA questions whose answer is outside the vocabulary carry no label
            scores = {str(a): float(v) for a, v in row["label"].items()}
            records.append({"question_id": str(row["question_id"]), "question": row["sent"],
                            "answer": max(scores, key=scores.get), "answer_scores": scores,
                            "image_id": str(row["img_id"]),
                            "visual": self._visual(config, str(row["img_id"])),
                            "types": row.get("types") or {}})
        return check_answers(records, self.info(config).labels, str(path))

    def read_eval(self, config: DataConfig, language: str, split: str) -> list[Record]:
        root = self.local_root(config) / "xgqa" / "data"
        return self._xgqa_file(config, root / "few_shot" / language / "dev.json"
                               if split == "validation" else
                               root / "zero_shot" / language / "testdev_balanced_questions.json")

    def _xgqa_file(self, config: DataConfig, path: Path) -> list[Record]:
        """Questions in xGQA's format: `{question_id: {question, answer, imageId, types}}`."""
        questions = read_json(path)
        if not isinstance(questions, dict):
            raise UserError(f"{path}: expected a JSON object of questions by id")
        records = []
        for qid, q in questions.items():
            missing = [k for k in ("question", "answer", "imageId") if k not in q]
            if missing:
                raise UserError(f"{path}: question {qid}: missing field(s) {', '.join(missing)}")
            types = q.get("types") or {}
            records.append({"question_id": qid, "question": q["question"], "answer": q["answer"],
                            "image_id": str(q["imageId"]),
                            "visual": self._visual(config, str(q["imageId"])),
                            "types": {k: types.get(k, "") for k in ("structural", "semantic")}})
        return check_answers(records, self.info(config).labels, str(path))


@cache
def _feature_store(path: str) -> RegionFeatures:
    return RegionFeatures(Path(path))


@cache
def _region_features(path: str, image_id: str, feature_dim: int) -> VisualTokens:
    return _feature_store(path)(image_id, feature_dim)
