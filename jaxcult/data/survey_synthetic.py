"""Synthetic survey data in the WorldValuesBench layout, for tests and the offline demo.

WVS data cannot ship with jaxcult. These files have the real layout and CLCA's question structure
(44 questions Q1-Q45 without Q42; scales 1-2 x20, 1-4 x12, 1-5 x9, 1-3 x3; the persona
demographics with codebook labels) but invented question wording and answers: every culture
gets its own seeded answer distribution per question, so metrics separate cultures as real data
would. Nothing here is survey data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from jaxcult.data.survey import CLCA_QUESTIONS

_SCALES = {**{f"Q{i}": (1, 4, "importance") for i in range(1, 7)},
           **{f"Q{i}": (1, 2, "yes_no") for i in range(7, 27)},
           **{f"Q{i}": (1, 4, "agree4") for i in range(27, 33)},
           **{f"Q{i}": (1, 5, "agree5") for i in range(33, 42)},
           **{f"Q{i}": (1, 3, "often") for i in range(43, 46)}}
_LABELS = {
    "importance": ("Very important", "Rather important", "Not very important",
                   "Not at all important"),
    "yes_no": ("Yes", "No"),
    "agree4": ("Strongly agree", "Agree", "Disagree", "Strongly disagree"),
    "agree5": ("Strongly agree", "Agree", "Neither agree nor disagree", "Disagree",
               "Strongly disagree"),
    "often": ("Often", "Sometimes", "Never"),
}
_TOPICS = ("cooking together", "music", "gardening", "public transport", "local festivals",
           "reading", "sports clubs", "volunteering", "neighbourhood walks", "handicrafts",
           "board games", "travelling", "learning languages", "family dinners", "cinema")
_DEMOGRAPHICS = {
    "H_SETTLEMENT": {"1": "Capital city", "2": "Regional center", "3": "District center",
                     "4": "Another city, town", "5": "Village"},
    "H_URBRURAL": {"1": "Urban", "2": "Rural"},
    "Q260": {"1": "Male", "2": "Female"},
    "X003R": {"1": "16-24 years", "2": "25-34 years", "3": "35-44 years", "4": "45-54 years",
              "5": "55-64 years", "6": "65 and more years"},
    "Q263": {"1": "I am born in this country", "2": "I am an immigrant to this country"},
    "Q273": {"1": "Married", "2": "Living together as married", "3": "Divorced",
             "5": "Widowed", "6": "Single"},
    "Q270": {str(n): str(n) for n in range(1, 7)},
    "Q275": {"1": "Primary education", "2": "Lower secondary education",
             "3": "Upper secondary education", "6": "Bachelor or equivalent",
             "7": "Master or equivalent"},
    "Q281": {"1": "Never had a job", "3": "Professional and technical",
             "5": "Clerical", "6": "Sales", "7": "Service", "9": "Skilled worker"},
    "Q279": {"1": "Full time", "2": "Part time", "3": "Self employed", "4": "Retired",
             "7": "Unemployed"},
    "Q287": {"1": "Upper class", "2": "Upper middle class", "3": "Lower middle class",
             "4": "Working class", "5": "Lower class"},
}
_COUNTRIES = {"156": "China", "276": "Germany", "392": "Japan", "724": "Spain", "826": "Great Britain",
              "840": "United States", "360": "Indonesia", "484": "Mexico"}


def _question_text(qid: str, kind: str, low: int, high: int, topic: str) -> str:
    labels = _LABELS[kind]
    stem = {"importance": f"how important is {topic} in your life?",
            "yes_no": f"would you say that {topic} is part of your weekly routine?",
            "agree4": f"how strongly do you agree that {topic} brings people together?",
            "agree5": f"how strongly do you agree that {topic} deserves public funding?",
            "often": f"how often do you talk about {topic} with friends?"}[kind]
    return (f"On a scale of {low} to {high}, {low} meaning '{labels[0]}' and {high} meaning "
            f"'{labels[-1]}', {stem} (synthetic question {qid})")


def write_synthetic_worldvaluesbench(root: str | Path, cultures: tuple[str, ...] = ("China", "Germany"),
                                     respondents: int = 60, seed: int = 0) -> Path:
    """Write question_metadata.json, codebook.json and full_{demographic,value}_qa.tsv under
    `root`; returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    by_name = {name: code for code, name in _COUNTRIES.items()}
    unknown = [c for c in cultures if c not in by_name]
    if unknown:
        raise ValueError(f"synthetic cultures must be among {sorted(by_name)}, found {unknown}")
    metadata, codebook = {}, {"B_COUNTRY": {"question": "ISO 3166-1 numeric country code",
                                            "type": "multiple_choice", "choices": _COUNTRIES}}
    for code, choices in _DEMOGRAPHICS.items():
        codebook[code] = {"question": code, "type": "multiple_choice", "choices": choices}
    for i, qid in enumerate(CLCA_QUESTIONS):
        low, high, kind = _SCALES[qid]
        metadata[qid] = {"question": _question_text(qid, kind, low, high, _TOPICS[i % len(_TOPICS)]),
                         "category": "Social Values, Norms, Stereotypes", "use_case": "value",
                         "answer_scale_min": low, "answer_scale_max": high,
                         "answer_data_type": "ordinal"}
        codebook[qid] = {"question": metadata[qid]["question"], "type": "multiple_choice",
                         "choices": {str(low + j): label for j, label in enumerate(_LABELS[kind])}}
    (root / "question_metadata.json").write_text(json.dumps(metadata, indent=1), encoding="utf-8")
    (root / "codebook.json").write_text(json.dumps(codebook, indent=1), encoding="utf-8")
    people, values = [], []
    for culture in cultures:
        leaning = {qid: rng.dirichlet(np.full(_SCALES[qid][1] - _SCALES[qid][0] + 1, 0.7))
                   for qid in CLCA_QUESTIONS}
        for n in range(respondents):
            interview = f"{by_name[culture]}07{n + 1:04d}"
            person = {"D_INTERVIEW": interview, "B_COUNTRY": by_name[culture]}
            person.update({code: rng.choice(list(choices)) for code, choices in _DEMOGRAPHICS.items()})
            people.append(person)
            answer = {"D_INTERVIEW": interview}
            for qid in CLCA_QUESTIONS:
                low, high, _ = _SCALES[qid]
                missing = rng.random() < 0.03  # WVS: -1 don't know, -2 no answer
                answer[qid] = str(rng.choice([-1, -2]) if missing
                                  else low + rng.choice(high - low + 1, p=leaning[qid]))
            values.append(answer)
    for name, rows in (("full_demographic_qa.tsv", people), ("full_value_qa.tsv", values)):
        with (root / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    return root
