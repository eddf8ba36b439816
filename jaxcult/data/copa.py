"""COPA (English, train/validation) and XCOPA (11 languages, validation/test) from local files.

Expected layout under `data.manual_dir` (the public releases, as in `../shared/data`):
`copa/derived_superglue_format/{train,val,test}.jsonl` and
`xcopa/data/<lang>/{val,test}.<lang>.jsonl`; records have `premise`, `choice1`, `choice2`,
`question` (`cause`/`effect`) and `label` (0/1). Each becomes a `multiple_choice` record whose
context is the premise and whose choices are "question + choice", with the English question
phrasing of the SuperGLUE/XCOPA baselines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from jaxcult.config import DataConfig
from jaxcult.data.registry import Dataset, DatasetInfo, decoded, register_dataset
from jaxcult.errors import UserError

NAME = "xcopa"
XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
QUESTIONS = {"cause": "What was the cause?", "effect": "What happened as a result?"}
_FIELDS = ("premise", "choice1", "choice2", "question", "label")


def _path(root: Path, language: str, split: str) -> Path:
    if language == "en":
        name = {"train": "train", "validation": "val", "test": "test"}[split]
        return root / "copa" / "derived_superglue_format" / f"{name}.jsonl"
    if language not in XCOPA_LANGUAGES:
        raise UserError(f"{NAME}: unknown language code {language!r} (available: en, "
                        f"{', '.join(XCOPA_LANGUAGES)})")
    if split == "train":
        raise UserError(f"{NAME}: XCOPA has no training split for {language!r} (train on en)")
    name = "val" if split == "validation" else "test"
    return root / "xcopa" / "data" / language / f"{name}.{language}.jsonl"


def _read_copa_xml(root: Path, split: str) -> list[dict]:
    """English COPA from the original release (`COPA-resources/datasets/copa-{dev,test}.xml`):
    train = dev items 1-400, validation = 401-500 (SuperGLUE's split), test = items 501-1000."""
    import xml.etree.ElementTree as ET

    path = root / "copa" / "COPA-resources" / "datasets" / f"copa-{'test' if split == 'test' else 'dev'}.xml"
    if not path.exists():
        raise UserError(f"{_path(root, 'en', split)}: file not found (nor {path}; data.manual_dir "
                        f"must hold copa/ and xcopa/)")
    try:
        items = ET.parse(path).getroot().findall("item")
    except ET.ParseError as error:
        raise UserError(f"{path}: not valid XML ({error})") from None
    records = []
    for item in items:
        number = int(item.get("id"))
        if split == "train" and number > 400 or split == "validation" and number <= 400:
            continue
        records.append({"premise": item.findtext("p"), "choice1": item.findtext("a1"),
                        "choice2": item.findtext("a2"), "question": item.get("asks-for"),
                        "label": int(item.get("most-plausible-alternative")) - 1, "idx": number})
    return records


def read_split(root: Path, language: str, split: str) -> list[dict]:
    path = _path(root, language, split)
    if language == "en" and not path.exists():
        return _read_copa_xml(root, split)
    if not path.exists():
        raise UserError(f"{path}: file not found (data.manual_dir must hold copa/ and xcopa/)")
    return read_copa_jsonl(path)


def read_copa_jsonl(path: Path) -> list[dict]:
    """COPA-format JSONL (`premise`, `choice1`, `choice2`, `question`, `label`)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not a JSON line ({err.msg})") from None
            missing = [f for f in _FIELDS if f not in record]
            if missing:
                raise UserError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            if record["label"] not in (0, 1) or record["question"] not in QUESTIONS:
                raise UserError(f"{path}:{number}: expected label 0/1 and question cause/effect, "
                                f"found {record['label']!r} / {record['question']!r}")
            records.append(record)
    if not records:
        raise UserError(f"{path}: split is empty")
    return records


def as_choices(record: dict, layout: str = "jaxcult") -> dict:
    """A COPA record as a `multiple_choice` record. `jaxcult`: context = premise, choices =
    "question + choice" (the SuperGLUE/XCOPA baselines' phrasing); `official`: context =
    "{premise} What was the {cause|effect}?", choices as given (the FUN code's run_copa.py)."""
    if layout == "official":
        return {"context": f"{record['premise']} What was the {record['question']}?",
                "label": record["label"], "choices": [record["choice1"], record["choice2"]]}
    question = QUESTIONS[record["question"]]
    return {"context": record["premise"], "label": record["label"],
            "choices": [f"{question} {record['choice1']}", f"{question} {record['choice2']}"]}


class CopaSettings(DataConfig):
    copa_format: Literal["jaxcult", "official"] = Field(
        "jaxcult", description="how a premise and its question become choices (see "
        "jaxcult.data.copa.as_choices)")


@register_dataset(NAME)
class XCOPA(Dataset):
    """COPA (English train/validation/test) and XCOPA (11 languages) from `data.manual_dir`;
    `data.train_file` is COPA-format JSONL. Setting `copa_format`: `jaxcult` or `official`
    (see `as_choices`)."""

    Settings = CopaSettings
    prepared = "jaxcult:xcopa"

    def _layout(self, config: CopaSettings) -> str:
        return config.copa_format

    def info(self, config: DataConfig) -> DatasetInfo:
        self._layout(config)
        return DatasetInfo("multiple_choice", ("en", *XCOPA_LANGUAGES), ("choice1", "choice2"))

    def read(self, config: DataConfig, language: str, split: str) -> list[dict]:
        layout = self._layout(config)
        return [as_choices(r, layout) for r in read_split(self.local_root(config), language, split)]

    def read_file(self, config: DataConfig, path: Path) -> list[dict]:
        layout = self._layout(config)
        return [as_choices(r, layout) for r in read_copa_jsonl(path)]

    def from_prepared(self, example: dict, config: DataConfig) -> dict:
        record = {k: decoded(example[k]) for k in ("premise", "choice1", "choice2")}
        record.update(question=("cause", "effect")[int(example["question"])],
                      label=int(example["label"]))
        return as_choices(record, self._layout(config))
