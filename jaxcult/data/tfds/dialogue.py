"""TFDS builders for local dialogue and survey data (the CLCA pillar's inputs).

- chat JSONL (`train.jsonl`, `validation.jsonl`, `test.jsonl`): one conversation per line,
  `{"messages": [{"role", "content"}, ...], "language"?: code}`.
- survey (`survey.json`): `{"questions": [{"id", "text", "scale": [labels...]}],
  "respondents": [{"id", "demographics": {...}, "answers": {question_id: scale index}}]}`;
  split `questions` lists the questions with their answer scales, split `respondents` one
  respondent each (demographics as JSON text, answers as (question, index) pairs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxcult.data.lm import ROLES, read_chat_jsonl
from jaxcult.data.tfds.base import LocalBuilder
from jaxcult.errors import UserError

_TEXT = tfds.features.Text()


class JaxcultChat(LocalBuilder):
    DESCRIPTION = "Chat conversations from local JSONL files (roles system/user/assistant)."
    FEATURES = {"messages": tfds.features.Sequence({"role": tfds.features.ClassLabel(names=list(ROLES)),
                                                    "content": _TEXT}),
                "language": _TEXT}

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        splits = {}
        for name in ("train", "validation", "test"):
            path = root / f"{name}.jsonl"
            if path.is_file():
                splits[name] = [{"messages": {"role": [m["role"] for m in r["messages"]],
                                              "content": [m["content"] for m in r["messages"]]},
                                 "language": r.get("language", "")} for r in read_chat_jsonl(path)]
        if not splits:
            raise UserError(f"{root}: no train.jsonl, validation.jsonl or test.jsonl")
        return splits


class JaxcultSurvey(LocalBuilder):
    DESCRIPTION = "Survey questions with answer scales, and respondents with demographics and answers."
    FEATURES = {"id": _TEXT, "text": _TEXT, "scale": tfds.features.Sequence(_TEXT),
                "demographics": _TEXT,
                "answers": tfds.features.Sequence({"question": _TEXT, "answer": np.int32})}

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        path = root / "survey.json"
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        try:
            survey = json.loads(path.read_text(encoding="utf-8"))
            questions, respondents = survey["questions"], survey["respondents"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise UserError(f"{path}: expected an object with 'questions' and 'respondents' "
                            f"({error})") from None
        scales = {}
        rows = []
        for i, q in enumerate(questions):
            if not isinstance(q, dict) or not {"id", "text", "scale"} <= set(q) or not q["scale"]:
                raise UserError(f"{path}: questions[{i}]: needs 'id', 'text' and a non-empty 'scale'")
            scales[str(q["id"])] = len(q["scale"])
            rows.append({"id": str(q["id"]), "text": q["text"], "scale": list(map(str, q["scale"])),
                         "demographics": "", "answers": {"question": [], "answer": []}})
        people = []
        for i, r in enumerate(respondents):
            answers = r.get("answers") if isinstance(r, dict) else None
            if not isinstance(answers, dict) or "id" not in r:
                raise UserError(f"{path}: respondents[{i}]: needs 'id' and an 'answers' object")
            for question, value in answers.items():
                if question not in scales:
                    raise UserError(f"{path}: respondents[{i}]: unknown question {question!r}")
                if not isinstance(value, int) or not 0 <= value < scales[question]:
                    raise UserError(f"{path}: respondents[{i}]: answer {value!r} to {question!r} is "
                                    f"outside its scale [0, {scales[question]})")
            people.append({"id": str(r["id"]), "text": "", "scale": [],
                           "demographics": json.dumps(r.get("demographics", {}), ensure_ascii=False,
                                                      sort_keys=True),
                           "answers": {"question": list(answers), "answer": list(answers.values())}})
        if not rows or not people:
            raise UserError(f"{path}: needs at least one question and one respondent")
        return {"questions": rows, "respondents": people}
