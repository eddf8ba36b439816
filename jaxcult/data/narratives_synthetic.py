"""Synthetic Surveys→Narratives sources for tests and the offline demo: culture texts, a NormAd
CSV and offensive-language task files, in the layouts the readers take. The sentences are
invented for jaxcult (no real corpus); they exercise the pipeline, not a culture. The survey
comes from `survey_synthetic.write_synthetic_worldvaluesbench`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

_CUSTOMS = (
    "Families in {c} often share a long meal on the weekend.",
    "Guests in {c} usually bring a small gift when they visit a home.",
    "Elders are greeted first at gatherings in {c}.",
    "Many people in {c} celebrate the new year with music and food.",
    "In {c}, punctuality is valued at work but relaxed among friends.",
    "Public holidays in {c} are often spent with relatives.",
    "Markets in {c} are lively places where people meet neighbours.",
    "Children in {c} are taught to thank the cook after a meal.",
)
_STORIES = (
    ("Gift giving", "Gifts are opened later, not in front of the giver.",
     "Alex received a present from a colleague and put it aside to open at home.",
     "Opening the gift later follows the local custom, so the action is acceptable."),
    ("Dining", "Wait for the host to start eating.",
     "Sam sat at the table and began eating before the host had sat down.",
     "Starting before the host is seen as impolite, so the action is not acceptable."),
    ("Greetings", "Greet the eldest person first.",
     "Kim arrived at the party and greeted the grandmother before the others.",
     "Greeting elders first shows respect, so the action is acceptable."),
)
_OFFENSIVE = ("You are a worthless idiot and everyone hates you.",
              "Shut up, you stupid fool.", "People like you are disgusting trash.",
              "Get lost, nobody wants your pathetic face here.",
              "What a brainless moron you are.", "You are the dumbest loser I have ever met.",
              "Go away, you ugly pig.", "Your ideas are garbage, just like you.")
_NEUTRAL = ("The weather is lovely today.", "I will meet my friends at the market later.",
            "Thank you for your help with the report.", "The train arrives at nine o'clock.",
            "We cooked rice and vegetables for dinner.", "The library opens early on Mondays.",
            "Congratulations on your new job!", "Please pass me the salt.")


def write_synthetic_narratives(root: str | Path, cultures: tuple[str, ...] = ("China", "Germany"),
                               seed: int = 0) -> dict[str, Path]:
    """Write `culture_texts/<culture>.txt`, `normad.csv` and `tasks/<culture>/<task>.jsonl`
    under `root`; returns their paths (`culture_texts`, `normad`, `tasks`)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    texts, tasks = root / "culture_texts", root / "tasks"
    texts.mkdir(parents=True, exist_ok=True)
    for culture in cultures:
        sentences = [_CUSTOMS[i].format(c=culture) for i in rng.permutation(len(_CUSTOMS))]
        half = len(sentences) // 2
        (texts / f"{culture}.txt").write_text(
            " ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:]) + "\n", encoding="utf-8")
        for task in ("insults", "comments"):
            folder = tasks / culture
            folder.mkdir(parents=True, exist_ok=True)
            rows = [{"text": t, "label": 1} for t in _OFFENSIVE] + [
                {"text": t, "label": 0} for t in _NEUTRAL]
            order = rng.permutation(len(rows))[:12]
            (folder / f"{task}.jsonl").write_text(
                "".join(json.dumps(rows[i]) + "\n" for i in order), encoding="utf-8")
    normad = root / "normad.csv"
    with normad.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Country", "Background", "Axis", "Subaxis", "Value",
                         "Rule-of-Thumb", "Story", "Explanation", "Gold Label"])
        for number, (culture, (axis, rule, story, why)) in enumerate(
                (c, s) for c in cultures for s in _STORIES):
            writer.writerow([number, culture.lower(), f"{axis} customs in {culture}.", axis, "",
                             "Respect", rule, story, why, "yes" if "not" not in why else "no"])
    return {"culture_texts": texts, "normad": normad, "tasks": tasks}
