"""TFDS builders for the cross-lingual text tasks: COPA + XCOPA, PAWS-X, MNLI + XNLI, and
SQuAD v1.1 + XQuAD + MLQA. Each split of a target language is `<split>_<lang>`; the readers are
the same ones the trainer uses on local files, so records and errors are identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxcult.data import copa, pairs, squad
from jaxcult.data.tfds.base import LocalBuilder
from jaxcult.errors import UserError

_TEXT = tfds.features.Text()


def _available(read, *args) -> list[dict] | None:
    """Records of an optional split (None when its file is absent)."""
    try:
        return read(*args)
    except UserError as error:
        if "file not found" in str(error):
            return None
        raise


class JaxcultXcopa(LocalBuilder):
    DESCRIPTION = "COPA (English train/validation/test) and XCOPA (11 languages, validation/test)."
    HOMEPAGE = "https://github.com/cambridgeltl/xcopa"
    URLS = {"copa": ("https://people.ict.usc.edu/~gordon/downloads/COPA-resources.tgz", ""),
            "xcopa": ("https://github.com/cambridgeltl/xcopa/archive/refs/heads/master.zip",
                      "xcopa-master")}
    FEATURES = {"premise": _TEXT, "choice1": _TEXT, "choice2": _TEXT,
                "question": tfds.features.ClassLabel(names=["cause", "effect"]),
                "label": tfds.features.ClassLabel(num_classes=2)}

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        keep = lambda r: {k: r[k] for k in self.FEATURES}  # noqa: E731
        splits = {name: [keep(r) for r in copa.read_split(root, "en", name)]
                  for name in ("train", "validation", "test")}
        for lang in copa.XCOPA_LANGUAGES:
            for name in ("validation", "test"):
                splits[f"{name}_{lang}"] = [keep(r) for r in copa.read_split(root, lang, name)]
        return splits


class _PairBuilder(LocalBuilder):
    LANGUAGES: tuple[str, ...] = ()
    LABELS: tuple[str, ...] = ()

    @property
    def FEATURES(self):  # noqa: N802 - TFDS convention
        return {"sentence1": _TEXT, "sentence2": _TEXT,
                "label": tfds.features.ClassLabel(names=list(self.LABELS))}

    def _read(self, root: Path, lang: str, split: str) -> list[dict] | None:
        raise NotImplementedError

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        splits = {}
        for lang in self.LANGUAGES:
            for name in ("train", "validation", "test"):
                records = _available(self._read, root, lang, name)
                if records is not None:
                    key = name if lang == "en" and name == "train" else f"{name}_{lang}"
                    splits[key] = [{"sentence1": r["text"], "sentence2": r["text_pair"],
                                    "label": r["label"]} for r in records]
        if not splits:
            raise UserError(f"{root}: no {self.name} files found")
        return splits


class JaxcultPawsx(_PairBuilder):
    DESCRIPTION = "PAWS-X paraphrase identification (7 languages); NS placeholder rows dropped."
    HOMEPAGE = "https://github.com/google-research-datasets/paws/tree/master/pawsx"
    URLS = {"x-final": ("https://storage.googleapis.com/paws/pawsx/x-final.tar.gz", "x-final")}
    LANGUAGES, LABELS = pairs.PAWSX_LANGUAGES, pairs.PAWSX_LABELS

    def _read(self, root, lang, split):
        if split == "train" and lang != "en":
            return None  # machine-translated training data is not part of zero-shot transfer
        return pairs.read_pawsx(root, lang, split)


class JaxcultXnli(_PairBuilder):
    DESCRIPTION = "MNLI (English training data) and XNLI (15 languages, validation/test)."
    HOMEPAGE = "https://github.com/facebookresearch/XNLI"
    URLS = {"MNLI": ("https://dl.fbaipublicfiles.com/glue/data/MNLI.zip", "MNLI"),
            "XNLI-1.0": ("https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip", "XNLI-1.0")}
    LANGUAGES, LABELS = pairs.XNLI_LANGUAGES, pairs.NLI_LABELS

    def _read(self, root, lang, split):
        if split == "train" and lang != "en":
            return None
        return pairs.read_xnli(root, lang, split)


class JaxcultSquad(LocalBuilder):
    DESCRIPTION = ("SQuAD v1.1 (train/validation) with XQuAD (12 languages) and MLQA (7 "
                   "languages, same-language dev/test) as `xquad_<lang>` / `mlqa_<split>_<lang>`.")
    HOMEPAGE = "https://github.com/google-deepmind/xquad"
    SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
    URLS = {"squad/train-v1.1.json": (f"{SQUAD}/train-v1.1.json", ""),
            "squad/dev-v1.1.json": (f"{SQUAD}/dev-v1.1.json", ""),
            **{f"xquad/xquad.{lang}.json": (
                f"https://github.com/google-deepmind/xquad/raw/master/xquad.{lang}.json", "")
               for lang in squad.XQUAD_LANGUAGES},
            "MLQA_V1": ("https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip", "MLQA_V1")}
    FEATURES = {"id": _TEXT, "question": _TEXT, "context": _TEXT,
                "answers": tfds.features.Sequence({"text": _TEXT, "answer_start": np.int32})}

    @staticmethod
    def _convert(records: list[dict]) -> list[dict]:
        return [{"id": r["id"], "question": r["question"], "context": r["context"],
                 "answers": {"text": r["answers"], "answer_start": r["starts"]}} for r in records]

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        sources = {"train": root / "squad" / "train-v1.1.json",
                   "validation": root / "squad" / "dev-v1.1.json",
                   **{f"xquad_{lang}": squad.xquad_path(root, lang) for lang in squad.XQUAD_LANGUAGES},
                   **{f"mlqa_{split}_{lang}": squad.mlqa_path(root, lang, split)
                      for lang in squad.MLQA_LANGUAGES for split in ("dev", "test")}}
        splits = {name: self._convert(squad.read_squad(path))
                  for name, path in sources.items() if path.is_file()}
        if not splits:
            raise UserError(f"{root}: no SQuAD, XQuAD or MLQA files found")
        return splits
