"""Survey data for cultural evaluation: questions with their scales, respondents per culture.

Two layouts are read:

- a WorldValuesBench checkout (WVS wave 7): `question_metadata.json` (question text, scale min /
  max, category), `codebook.json` (the label of every code), and `<split>_demographic_qa.tsv` +
  `<split>_value_qa.tsv` joined on `D_INTERVIEW`, found under the directory or its
  `WorldValuesBench/<split>/` and `dataset_construction/` subfolders; cultures are the
  `B_COUNTRY` names;
- jaxcult's own `survey.json` (`{"questions": [{"id", "text", "scale": [labels]}], "respondents":
  [{"id", "culture", "demographics": {name: text}, "answers": {question: scale index}}]}`).

WVS negative codes (don't know, no answer, not asked, missing) and codes outside a question's
scale are missing answers (None): they count in no distribution.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from jaxcult.errors import UserError

# CLCA's question set: the WVS "Social Values, Norms, Stereotypes" category without Q42.
CLCA_QUESTIONS = tuple(f"Q{i}" for i in range(1, 46) if i != 42)

# The demographics of CLCA's persona prompt (WVS codes) and how the prompt names them.
PERSONA_FIELDS = (
    ("H_SETTLEMENT", "Settlement"), ("H_URBRURAL", "Urban or rural"), ("Q260", "Gender"),
    ("X003R", "Age"), ("Q263", "Born in this country"), ("Q273", "Marital status"),
    ("Q270", "Number of people in household"), ("Q275", "Highest educational level"),
    ("Q281", "Profession"), ("Q279", "Employment status"), ("Q287", "Social class"),
)


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    low: int
    high: int
    labels: tuple[str, ...] = ()   # labels[i] names option low + i (may be empty)

    @property
    def options(self) -> range:
        return range(self.low, self.high + 1)


@dataclass(frozen=True)
class Respondent:
    id: str
    culture: str
    demographics: dict[str, str]          # prompt field name -> rendered value
    answers: dict[str, int | None]        # question id -> option (None: missing)


@dataclass
class Survey:
    questions: list[Question]
    respondents: dict[str, list[Respondent]] = field(default_factory=dict)  # culture -> people

    def select(self, question_ids: list[str] | None) -> Survey:
        """The survey restricted to `question_ids` (in that order); unknown ids are an error."""
        if question_ids is None:
            return self
        known = {q.id: q for q in self.questions}
        missing = [q for q in question_ids if q not in known]
        if missing:
            raise UserError(f"survey: unknown question ids {missing} (the survey has "
                            f"{len(known)} questions, e.g. {list(known)[:5]})")
        return Survey([known[q] for q in question_ids], self.respondents)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read JSON ({error})") from None


def _find(root: Path, name: str, subfolders: tuple[str, ...]) -> Path:
    for folder in ("", *subfolders):
        if (root / folder / name).is_file():
            return root / folder / name
    raise UserError(f"{root}: no {name} (looked in {', '.join(['.', *subfolders])})")


def _tsv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read TSV ({error})") from None


def _code(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _wvs_questions(metadata: dict, codebook: dict, path: Path) -> list[Question]:
    questions = []
    for qid, meta in metadata.items():
        if meta.get("use_case") != "value":
            continue
        try:
            low, high = int(meta["answer_scale_min"]), int(meta["answer_scale_max"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: {qid}: answer_scale_min / answer_scale_max must be integers, "
                            f"found {meta.get('answer_scale_min')!r}, "
                            f"{meta.get('answer_scale_max')!r}") from None
        choices = codebook.get(qid, {}).get("choices", {})
        labels = tuple(choices.get(str(v), "") for v in range(low, high + 1))
        questions.append(Question(qid, meta["question"], low, high,
                                  labels if all(labels) else ()))
    return questions


def read_worldvaluesbench(root: Path, split: str = "full") -> Survey:
    """A WorldValuesBench checkout (layout in the module docstring)."""
    root = Path(root)
    meta_path = _find(root, "question_metadata.json", ("dataset_construction",))
    codebook_path = _find(root, "codebook.json", ("dataset_construction",))
    folders = (f"WorldValuesBench/{split}", split)
    people_path = _find(root, f"{split}_demographic_qa.tsv", folders)
    answers_path = _find(root, f"{split}_value_qa.tsv", folders)
    codebook = _json(codebook_path)
    questions = _wvs_questions(_json(meta_path), codebook, meta_path)
    answers = {row.get("D_INTERVIEW"): row for row in _tsv(answers_path)}
    countries = codebook.get("B_COUNTRY", {}).get("choices", {})
    survey = Survey(questions)
    for line, row in enumerate(_tsv(people_path), start=2):
        interview = row.get("D_INTERVIEW")
        if interview not in answers:
            raise UserError(f"{people_path}:{line}: interview {interview!r} has no row in "
                            f"{answers_path.name}")
        country = countries.get(str(_code(row.get("B_COUNTRY"))), row.get("B_COUNTRY", ""))
        values = answers[interview]
        demographics = {}
        for code, name in PERSONA_FIELDS:
            value = row.get(code)
            label = codebook.get(code, {}).get("choices", {}).get(str(_code(value)), value)
            if value not in (None, "") and (_code(value) is None or _code(value) >= 0):
                demographics[name] = str(label)
        parsed = {}
        for q in questions:
            code = _code(values.get(q.id))
            parsed[q.id] = code if code is not None and q.low <= code <= q.high else None
        survey.respondents.setdefault(country, []).append(
            Respondent(str(interview), country, demographics, parsed))
    return survey


def read_survey_json(path: Path) -> Survey:
    """jaxcult's `survey.json` (scale index i is option i + 1; labels are the scale)."""
    data = _json(path)
    try:
        questions = [Question(str(q["id"]), q["text"], 1, len(q["scale"]), tuple(q["scale"]))
                     for q in data["questions"]]
        people = data["respondents"]
    except (KeyError, TypeError) as error:
        raise UserError(f"{path}: expected 'questions' with id/text/scale and 'respondents' "
                        f"({error})") from None
    survey = Survey(questions)
    scales = {q.id: q for q in questions}
    for i, person in enumerate(people):
        if not isinstance(person, dict) or "culture" not in person:
            raise UserError(f"{path}: respondents[{i}]: needs 'culture' (the group it belongs to)")
        answers = {}
        for qid, index in person.get("answers", {}).items():
            if qid not in scales:
                raise UserError(f"{path}: respondents[{i}]: unknown question {qid!r}")
            inside = isinstance(index, int) and 0 <= index < len(scales[qid].labels)
            answers[qid] = index + 1 if inside else None
        survey.respondents.setdefault(person["culture"], []).append(
            Respondent(str(person.get("id", i)), person["culture"],
                       {str(k): str(v) for k, v in person.get("demographics", {}).items()},
                       answers))
    return survey


def load_survey(path: str | Path, split: str = "full") -> Survey:
    """A survey from a WorldValuesBench checkout or a `survey.json` (file or its directory)."""
    path = Path(path)
    if path.is_file():
        return read_survey_json(path)
    if not path.is_dir():
        raise UserError(f"{path}: survey not found (a WorldValuesBench checkout or survey.json)")
    if (path / "survey.json").is_file():
        return read_survey_json(path / "survey.json")
    return read_worldvaluesbench(path, split)
