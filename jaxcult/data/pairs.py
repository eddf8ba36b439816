"""Sentence-pair classification from local files: PAWS-X (paraphrase) and MNLI/XNLI (NLI).

Layouts read (the first that exists wins):
- XTREME's preprocessed files: `pawsx/{train,dev,test}-<lang>.tsv`, `xnli/{dev,test}-<lang>.tsv`
  (no header: sentence1, sentence2, label), also under `data/pawsx/` and `data/xnli/`;
- the official releases: PAWS-X `x-final/<lang>/{train,dev_2k,test_2k}.tsv` (header `id
  sentence1 sentence2 label`), XNLI-1.0 `XNLI-1.0/xnli.{dev,test}.tsv` (header with
  `language`, `gold_label`, `sentence1`, `sentence2`) and GLUE's `MNLI/train.tsv` (header with
  `sentence1`, `sentence2`, `gold_label`) as XNLI's English training data.
Rows whose sentence is PAWS-X's `NS` placeholder (untranslated) are skipped, as the official
sizes do. Labels: PAWS-X 0/1; NLI entailment 0, neutral 1, contradiction 2.
"""

from __future__ import annotations

import csv
from pathlib import Path

from jaxcult.config import DataConfig
from jaxcult.data.registry import Dataset, DatasetInfo, decoded, register_dataset
from jaxcult.errors import UserError

PAWSX_LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")
XNLI_LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur",
                  "vi", "zh")
NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_ALIASES = {"contradictory": "contradiction"}
PAWSX_LABELS = ("different", "paraphrase")
_OFFICIAL_PAWSX = {"train": "train.tsv", "validation": "dev_2k.tsv", "test": "test_2k.tsv"}
_XTREME = {"train": "train", "validation": "dev", "test": "test"}


def _rows(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.reader(handle, delimiter="\t"))
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _label(value: str, names: tuple[str, ...], where: str) -> int:
    value = _NLI_ALIASES.get(value.strip(), value.strip())
    if value.isdigit() and int(value) < len(names):
        return int(value)
    if value in names:
        return names.index(value)
    raise UserError(f"{where}: label {value!r} is not one of {', '.join(names)} (or 0-{len(names) - 1})")


def _examples(rows: list[list[str]], columns: tuple[int, int, int], names: tuple[str, ...],
              path: Path, first_line: int, language: str | None = None,
              language_column: int | None = None) -> list[dict]:
    examples = []
    for number, row in enumerate(rows, first_line):
        if language_column is not None and row[language_column] != language:
            continue
        if len(row) <= max(columns):
            raise UserError(f"{path}:{number}: expected {max(columns) + 1} tab-separated fields, "
                            f"found {len(row)}")
        first, second = row[columns[0]], row[columns[1]]
        if first == "NS" or second == "NS":
            continue
        examples.append({"text": first, "text_pair": second,
                         "label": _label(row[columns[2]], names, f"{path}:{number}")})
    if not examples:
        raise UserError(f"{path}: no examples{f' for language {language!r}' if language else ''}")
    return examples


def _with_header(path: Path, wanted: tuple[str, ...]) -> tuple[list[list[str]], tuple[int, ...]]:
    rows = _rows(path)
    if not rows:
        raise UserError(f"{path}: empty file")
    header = rows[0]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise UserError(f"{path}: header lacks column(s) {', '.join(missing)}")
    return rows[1:], tuple(header.index(c) for c in wanted)


def read_tsv(path: Path, names: tuple[str, ...]) -> list[dict]:
    """A TSV with a header (sentence1, sentence2 and label or gold_label) or XTREME's 3 columns."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    first = _rows(path)[:1]
    if first and "sentence1" in first[0]:
        label = "gold_label" if "gold_label" in first[0] else "label"
        rows, columns = _with_header(path, ("sentence1", "sentence2", label))
        return _examples(rows, columns, names, path, 2)
    return _examples(_rows(path), (0, 1, 2), names, path, 1)


def _xtreme(root: Path, dataset: str, split: str, language: str) -> Path | None:
    for base in (root / dataset, root / "data" / dataset, root / dataset / "data" / dataset):
        path = base / f"{_XTREME[split]}-{language}.tsv"
        if path.is_file():
            return path
    return None


def read_pawsx(root: Path, language: str, split: str) -> list[dict]:
    if language not in PAWSX_LANGUAGES:
        raise UserError(f"pawsx: unknown language code {language!r} "
                        f"(available: {', '.join(PAWSX_LANGUAGES)})")
    path = _xtreme(root, "pawsx", split, language)
    if path is None:
        path = root / "x-final" / language / _OFFICIAL_PAWSX[split]
        if split == "train" and language != "en":
            path = root / "x-final" / language / "translated_train.tsv"
    return read_tsv(path, PAWSX_LABELS)


def read_xnli(root: Path, language: str, split: str) -> list[dict]:
    if language not in XNLI_LANGUAGES:
        raise UserError(f"xnli: unknown language code {language!r} "
                        f"(available: {', '.join(XNLI_LANGUAGES)})")
    if split == "train":  # XNLI is trained on English MNLI
        for path in (root / "MNLI" / "train.tsv", root / "mnli" / "train.tsv",
                     root / "xnli" / "train-en.tsv"):
            if path.is_file():
                return read_tsv(path, NLI_LABELS)
        raise UserError(f"{root / 'MNLI' / 'train.tsv'}: file not found (XNLI trains on MNLI; "
                        f"or set data.train_file)")
    path = _xtreme(root, "xnli", split, language)
    if path is not None:
        return read_tsv(path, NLI_LABELS)
    official = root / "XNLI-1.0" / f"xnli.{'dev' if split == 'validation' else 'test'}.tsv"
    if not official.is_file():
        raise UserError(f"{official}: file not found (nor XTREME's xnli/{_XTREME[split]}-{language}.tsv)")
    rows, columns = _with_header(official, ("sentence1", "sentence2", "gold_label", "language"))
    return _examples(rows, columns[:3], NLI_LABELS, official, 2, language, columns[3])


class _PairDataset(Dataset):
    """Prepared form: the `jaxcult:<name>` builder, English training data as `train` and every
    evaluation split as `<split>_<lang>` (English's too)."""

    def prepared_split(self, language: str, split: str, evaluation: bool = False) -> str:
        return "train" if split == "train" else f"{split}_{language}"

    def from_prepared(self, example: dict, config: DataConfig) -> dict:
        return {"text": decoded(example["sentence1"]), "text_pair": decoded(example["sentence2"]),
                "label": int(example["label"])}


@register_dataset("pawsx")
class PAWSX(_PairDataset):
    """PAWS-X paraphrase pairs (7 languages) from `data.manual_dir`; `data.train_file` is a TSV."""

    prepared = "jaxcult:pawsx"

    def info(self, config: DataConfig) -> DatasetInfo:
        return DatasetInfo("text_label", PAWSX_LANGUAGES, PAWSX_LABELS)

    def read(self, config: DataConfig, language: str, split: str) -> list[dict]:
        return read_pawsx(self.local_root(config), language, split)

    def read_file(self, config: DataConfig, path: Path) -> list[dict]:
        return read_tsv(path, PAWSX_LABELS)


@register_dataset("xnli")
class XNLI(_PairDataset):
    """XNLI (15 languages), trained on English MNLI, from `data.manual_dir`; `data.train_file`
    is a TSV."""

    prepared = "jaxcult:xnli"

    def info(self, config: DataConfig) -> DatasetInfo:
        return DatasetInfo("text_label", XNLI_LANGUAGES, NLI_LABELS)

    def read(self, config: DataConfig, language: str, split: str) -> list[dict]:
        return read_xnli(self.local_root(config), language, split)

    def read_file(self, config: DataConfig, path: Path) -> list[dict]:
        return read_tsv(path, NLI_LABELS)
