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
from collections.abc import Collection
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
    # raw WVS codes where `answers` has None (negative codes, codes off the scale)
    codes: dict[str, int] = field(default_factory=dict)


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


def _demographics(row: dict, codebook: dict) -> dict[str, str]:
    found = {}
    for code, name in PERSONA_FIELDS:
        value = row.get(code)
        label = codebook.get(code, {}).get("choices", {}).get(str(_code(value)), value)
        if value not in (None, "") and (_code(value) is None or _code(value) >= 0):
            found[name] = str(label)
    return found


def _stream_tsv(path: Path):
    """(line number, row) of a TSV file read row by row (the value file of the full WVS is
    ~97k rows x ~300 columns: never held whole)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            yield from enumerate(csv.DictReader(handle, delimiter="\t"), start=2)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read TSV ({error})") from None


def read_worldvaluesbench(root: Path, split: str = "full",
                          cultures: Collection[str] | None = None) -> Survey:
    """A WorldValuesBench checkout (layout in the module docstring); only the respondents of
    `cultures` (B_COUNTRY names) when given, the value file streamed row by row, so memory
    follows the respondents kept, not the file."""
    root = Path(root)
    meta_path = _find(root, "question_metadata.json", ("dataset_construction",))
    codebook_path = _find(root, "codebook.json", ("dataset_construction",))
    folders = (f"WorldValuesBench/{split}", split)
    people_path = _find(root, f"{split}_demographic_qa.tsv", folders)
    answers_path = _find(root, f"{split}_value_qa.tsv", folders)
    codebook = _json(codebook_path)
    questions = _wvs_questions(_json(meta_path), codebook, meta_path)
    countries = codebook.get("B_COUNTRY", {}).get("choices", {})
    people: dict[str, tuple[int, str, dict[str, str]]] = {}  # interview -> line, country, demographics
    seen = set()
    for line, row in _stream_tsv(people_path):
        country = countries.get(str(_code(row.get("B_COUNTRY"))), row.get("B_COUNTRY", ""))
        seen.add(country)
        if cultures is None or country in cultures:
            people[row.get("D_INTERVIEW")] = (line, country, _demographics(row, codebook))
    absent = sorted(set(cultures or ()) - seen)
    if absent:
        raise UserError(f"{people_path}: no respondents of {', '.join(map(repr, absent))} "
                        f"(cultures: {', '.join(sorted(seen))})")
    found: dict[str, Respondent] = {}
    for _, values in _stream_tsv(answers_path):
        interview = values.get("D_INTERVIEW")
        if interview not in people:
            continue
        codes = {q.id: _code(values.get(q.id)) for q in questions}
        parsed = {q.id: code if code is not None and q.low <= code <= q.high else None
                  for q, code in zip(questions, codes.values())}
        odd = {qid: code for qid, code in codes.items() if code is not None and parsed[qid] is None}
        _, country, demographics = people[interview]
        found[interview] = Respondent(str(interview), country, demographics, parsed, odd)
    survey = Survey(questions)
    for interview, (line, country, _) in people.items():
        if interview not in found:
            raise UserError(f"{people_path}:{line}: interview {interview!r} has no row in "
                            f"{answers_path.name}")
        survey.respondents.setdefault(country, []).append(found[interview])
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


def load_survey(path: str | Path, split: str = "full",
                cultures: Collection[str] | None = None) -> Survey:
    """A survey from a WorldValuesBench checkout or a `survey.json` (file or its directory);
    a checkout is read only for `cultures` when given."""
    path = Path(path)
    if path.is_file():
        return read_survey_json(path)
    if not path.is_dir():
        raise UserError(f"{path}: survey not found (a WorldValuesBench checkout or survey.json)")
    if (path / "survey.json").is_file():
        return read_survey_json(path / "survey.json")
    return read_worldvaluesbench(path, split, cultures)
