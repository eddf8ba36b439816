"""TFDS builders for visual QA questions: GQA/xGQA (questions, answer vocabulary, types;
images referenced by id) and easy-VQA (64x64 images as uint8 tensors, with templated
translations of its English questions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxcult.data.registry import read_json
from jaxcult.data.tfds.base import LocalBuilder
from jaxcult.data.tfds.easy_vqa_templates import LANGUAGES as EASY_LANGUAGES
from jaxcult.data.tfds.easy_vqa_templates import translate
from jaxcult.data.vqa import XGQA_LANGUAGES
from jaxcult.errors import UserError

_TEXT = tfds.features.Text()
XGQA_FILES = {"dev": "dev", "train_1": "train_1", "train_5": "train_5", "test": "test"}


def answer_vocabulary(root: Path) -> list[str]:
    """GQA's answer vocabulary (iGLUE's `trainval_label2ans.json`)."""
    return read_json(root / "gqa_iglue" / "datasets" / "gqa" / "annotations" / "trainval_label2ans.json")


class JaxcultXgqa(LocalBuilder):
    DESCRIPTION = ("xGQA few-shot splits (8 languages; English answers from GQA's 1,842-answer "
                   "vocabulary, label -1 outside it) and GQA testdev questions.")
    HOMEPAGE = "https://github.com/adapter-hub/xGQA"
    URLS = {**{f"xgqa/data/few_shot/{lang}/{name}.json": (
        f"https://github.com/adapter-hub/xGQA/raw/master/data/few_shot/{lang}/{name}.json", "")
        for lang in XGQA_LANGUAGES for name in ("dev", "train_1", "train_5", "test")},
        "gqa_iglue": ("https://github.com/e-bug/iglue/archive/refs/heads/main.zip", "iglue-main")}
    FEATURES = {"question_id": _TEXT, "question": _TEXT, "answer": _TEXT, "label": np.int32,
                "image_id": _TEXT, "full_answer": _TEXT, "structural": _TEXT, "semantic": _TEXT,
                "detailed": _TEXT}

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        vocabulary = {a: i for i, a in enumerate(answer_vocabulary(root))}
        splits = {}
        for lang in XGQA_LANGUAGES:
            for name in XGQA_FILES:
                path = root / "xgqa" / "data" / "few_shot" / lang / f"{name}.json"
                if path.is_file():
                    splits[f"{name}_{lang}"] = [self._question(qid, q, vocabulary, path)
                                                for qid, q in read_json(path).items()]
        testdev = root / "gqa_iglue" / "datasets" / "gqa" / "annotations" / "testdev.json"
        if testdev.is_file():
            splits["gqa_testdev"] = [self._gqa(q, vocabulary, testdev) for q in read_json(testdev)]
        if not splits:
            raise UserError(f"{root}: no xGQA or GQA question files found")
        return splits

    @staticmethod
    def _question(qid: str, q: dict, vocabulary: dict, path: Path) -> dict:
        missing = [k for k in ("question", "answer", "imageId", "types") if k not in q]
        if missing:
            raise UserError(f"{path}: question {qid}: missing field(s) {', '.join(missing)}")
        return {"question_id": qid, "question": q["question"], "answer": q["answer"],
                "label": vocabulary.get(q["answer"], -1), "image_id": q["imageId"],
                "full_answer": q.get("fullAnswer", ""), **{k: q["types"].get(k, "") for k in
                                                           ("structural", "semantic", "detailed")}}

    @staticmethod
    def _gqa(q: dict, vocabulary: dict, path: Path) -> dict:
        if not {"question_id", "sent", "img_id", "label"} <= set(q):
            raise UserError(f"{path}: question {q.get('question_id')}: expected question_id, sent, "
                            f"img_id and label")
        answer = max(q["label"], key=q["label"].get) if q["label"] else ""
        return {"question_id": str(q["question_id"]), "question": q["sent"], "answer": answer,
                "label": vocabulary.get(answer, -1), "image_id": q["img_id"], "full_answer": "",
                "structural": "", "semantic": "", "detailed": ""}


class JaxcultEasyVqa(LocalBuilder):
    DESCRIPTION = ("easy-VQA: 64x64 RGB shape images (uint8 tensors), English questions with "
                   "templated translations (`question_de`, ...); answers stay English.")
    HOMEPAGE = "https://github.com/vzhou842/easy-VQA"
    FEATURES = {"image": tfds.features.Tensor(shape=(64, 64, 3), dtype=np.uint8),
                "image_id": np.int32, "question": _TEXT, "answer": _TEXT, "label": np.int32,
                **{f"question_{lang}": _TEXT for lang in EASY_LANGUAGES if lang != "en"}}

    def _root(self, dl_manager) -> Path:
        if self._local is None:  # the easy-vqa asset (pip package) is the official distribution
            from jaxcult import assets

            return assets.get_asset("easy-vqa").path()
        return super()._root(dl_manager)

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        from PIL import Image

        answers = [a for a in (root / "answers.txt").read_text(encoding="utf-8").split() if a]
        splits = {}
        for split in ("train", "test"):
            questions = read_json(root / split / "questions.json")
            images: dict[int, np.ndarray] = {}
            records = splits.setdefault(split, [])
            for index, (question, answer, image_id) in enumerate(questions):
                if answer not in answers:
                    raise UserError(f"{root / split / 'questions.json'}: record {index}: answer "
                                    f"{answer!r} is not in answers.txt")
                if image_id not in images:
                    path = root / split / "images" / f"{image_id}.png"
                    if not path.is_file():
                        raise UserError(f"{path}: file not found (record {index})")
                    images[image_id] = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
                records.append({"image": images[image_id], "image_id": image_id,
                                "question": question, "answer": answer,
                                "label": answers.index(answer),
                                **{f"question_{lang}": translate(question, lang)
                                   for lang in EASY_LANGUAGES if lang != "en"}})
        return splits
