"""Readers of the narrative sources of Surveys→Narratives (EMNLP 2025): culture texts and NormAd.

- **Culture texts**: plain UTF-8 text about one culture (e.g. its Wikipedia "Culture of X"
  article), one file per culture; split into sentences (`split_sentences`), each sentence
  becomes one training record.
- **NormAd** (Rao et al. 2024, `akhilayerukola/NormAd`): a CSV/TSV export or JSON / JSONL
  records with the columns `Country`, `Background`, `Rule-of-Thumb`, `Story` and
  `Explanation` (others, e.g. `Value` and `Gold Label`, are ignored). Countries are matched
  case-insensitively, with `_` and spaces equal ("south_korea" = "South Korea").
- **Survey question-answer files** (the official data's precomputed survey view: CultureLLM's
  50 questions in "Give me the answer from 1 to N: Do you agree with ...?" form plus their
  paraphrases, ~1,100 records per culture): JSONL, one record per line, either
  `{"text": "### Question: <question> ### Answer: <answer>"}` (the official `*_llama.jsonl`
  files) or `{"messages": [..., {"role": "user", ...}, {"role": "assistant", ...}]}`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError

NORMAD_FIELDS = ("Country", "Background", "Rule-of-Thumb", "Story", "Explanation")
# A sentence ends at . ! ? (maybe closed by a quote or bracket) before a space, or at CJK 。！？
# (no space needed).
_SENTENCE_END = re.compile(r"(?<=[.!?][\"')\]])\s+|(?<=[.!?])\s+|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: paragraphs (blank lines) first, then sentence-final punctuation;
    line breaks inside a paragraph are spaces."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        sentences.extend(s.strip() for s in _SENTENCE_END.split(flat) if s.strip())
    return sentences


def read_culture_text(path: Path) -> list[str]:
    """The sentences of one culture's text file; a missing, non-UTF-8 or empty file is an error."""
    if not path.is_file():
        raise UserError(f"{path}: culture text not found")
    try:
        sentences = split_sentences(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not sentences:
        raise UserError(f"{path}: no text")
    return sentences


def same_country(a: str, b: str) -> bool:
    return " ".join(a.replace("_", " ").split()).casefold() == " ".join(
        b.replace("_", " ").split()).casefold()


@dataclass(frozen=True)
class NormAdStory:
    country: str
    background: str
    rule_of_thumb: str
    story: str
    explanation: str


def _rows(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: NormAd file not found") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else data.get("data", data.get("train", []))
    except (json.JSONDecodeError, csv.Error, AttributeError) as error:
        raise UserError(f"{path}: cannot read NormAd records ({error})") from None
    raise UserError(f"{path}: NormAd files are .csv, .tsv, .json or .jsonl, found {suffix!r}")


def read_normad(path: Path) -> list[NormAdStory]:
    """Every story of a NormAd file (layout in the module docstring)."""
    rows = _rows(Path(path))
    if not rows:
        raise UserError(f"{path}: no NormAd records")
    stories = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: record {number}: expected an object with "
                            f"{', '.join(NORMAD_FIELDS)}")
        missing = [f for f in NORMAD_FIELDS if not str(row.get(f) or "").strip()]
        if missing:
            raise UserError(f"{path}: record {number}: missing or empty {missing[0]!r} (NormAd "
                            f"records need {', '.join(NORMAD_FIELDS)})")
        stories.append(NormAdStory(*(str(row[f]).strip() for f in NORMAD_FIELDS)))
    return stories


def _question_answer(record, where: str) -> tuple[str, str]:
    """(question, answer) of one survey-QA record, split at the markers as the official
    loader does (what lies between "### Question:" and "### Answer:", and after it)."""
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        text = record["text"]
        if "### Question:" in text and "### Answer:" in text:
            question = text.split("### Question:")[1].split("### Answer:")[0].strip()
            answer = text.split("### Answer:")[1].strip()
            if question and answer:
                return question, answer
        raise UserError(f"{where}: expected \"### Question: ... ### Answer: ...\" in 'text'")
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        turns = {m.get("role"): str(m.get("content") or "").strip()
                 for m in record["messages"] if isinstance(m, dict)}
        if turns.get("user") and turns.get("assistant"):
            return turns["user"], turns["assistant"]
        raise UserError(f"{where}: 'messages' needs a user and an assistant turn")
    raise UserError(f"{where}: expected a 'text' or a 'messages' record")


def read_survey_qa(path: Path) -> list[tuple[str, str]]:
    """Every (question, answer) of one culture's survey-QA file (module docstring)."""
    return read_checked_jsonl(Path(path), _question_answer)
