"""Stories (the paper's free-form generation): each student writes a short story per
(country, topic, condition), the knowledge retrieved for the topic in its prompt; a judge
rates each story 1-10 on relevance, fluency and coherence, one question per metric, its
answer started with "Rating:", reading the first whole number from 1 to 10 in it (an answer
without one is kept and counted as unrated). The prompted conditions' stories are written
together, each adapter's apart, one decoding batch per saved batch.

Files, per model: `evaluate/stories/<model>.jsonl` (the stories) and
`evaluate/stories/<model>.ratings.jsonl` (the judge's answers and ratings); both appended a
batch at a time.
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxcult.recipes.cckg import prompting
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.cckg.evaluate import (
    adapter_digests,
    adapter_or_none,
    check_adapter_model,
    digest,
    file_digest,
    knowledge_for,
    slug,
)
from jaxcult.recipes.cckg.knowledge import UNITS, conditions
from jaxcult.recipes.stage_files import append_records, check_provenance, read_records
from jaxcult.remote.settings import model_label

METRICS = {
    "relevance": "how well it keeps to the topic and rings true to everyday life in the country",
    "fluency": "how natural and grammatical its language is",
    "coherence": "how logically its events follow one another",
}
RATE = ("Here is a short story set in {country} about {topic}.\n\n{story}\n\nRate the story's "
        "{metric} ({meaning}) from 1 (worst) to 10 (best). Answer with the number only.")
RATING_LEAD = "Rating:"       # starts the judge's answer, so that a number comes first


def rating(text: str) -> int | None:
    """The first whole number from 1 to 10 in the judge's answer (after the lead)."""
    match = re.search(r"\b(10|[1-9])\b", text.removeprefix(RATING_LEAD))
    return int(match.group(1)) if match else None


def stories_path(graphs: Graphs, model: str, ratings: bool = False) -> Path:
    return graphs.out / "evaluate" / "stories" / (slug(model) + (".ratings" if ratings else "")
                                                  + ".jsonl")


def _jobs(graphs: Graphs, model: str) -> tuple[list[tuple], list[str]]:
    """(country, topic, condition) to write, and the conditions without a graph."""
    settings = graphs.config.evaluate.stories
    jobs, missing = [], []
    for country, topics in settings.topics.items():
        made, lacking = conditions(graphs, country, list(settings.conditions))
        missing += [f"{country} {label}" for label in lacking]
        for condition in made:
            if condition.kind == "adapter" and adapter_or_none(graphs, model, country,
                                                               condition) is None:
                continue
            jobs += [(country, topic, condition) for topic in topics]
    return jobs, missing


def write_stories(graphs: Graphs, model: str) -> list[str]:
    """Every story of `model`; the conditions left out for want of a graph."""
    settings = graphs.config.evaluate.stories
    check_adapter_model(graphs, list(settings.conditions))
    path = stories_path(graphs, model)
    check_provenance(path, {"stage": "evaluate stories", "model": model,
                            "adapters": adapter_digests(graphs, model, list(settings.topics),
                                                        list(settings.conditions)),
                            "prompt": digest(prompting.STORY, prompting.KNOWLEDGE_HEADS),
                            "graph": {n: file_digest(graphs.out / n) for n in UNITS.values()},
                            "generation": settings.generation.provenance(),
                            **graphs.config.evaluate.model_dump(
                                mode="json", include={"assertions", "path_text", "retriever"})})
    done = {tuple(r["key"]) for r in read_records(path)}
    jobs, missing = _jobs(graphs, model)
    groups: dict[str | None, list] = {}      # the prompted conditions together, each adapter apart
    for number, (country, topic, condition) in enumerate(jobs):
        if (country, topic, condition.label) not in done:
            groups.setdefault(country if condition.kind == "adapter" else None, []).append(
                (number, country, topic, condition))
    size = settings.generation.batch_size
    for adapted, group in groups.items():
        adapter = (adapter_or_none(graphs, model, adapted, group[0][3]) if adapted is not None
                   else None)
        student = graphs.student(model, adapter)
        for start in range(0, len(group), size):     # one decoding batch per saved batch
            todo = group[start:start + size]
            found = [knowledge_for(graphs, condition, country, [f"{topic} in {country}"])[0]
                     for _, country, topic, condition in todo]
            chats = [prompting.story_chat(country, topic, prompting.knowledge_block(
                condition.kind, country, texts))
                for (_, country, topic, condition), texts in zip(todo, found)]
            replies = student.reply(chats, settings.generation, stream=todo[0][0])
            append_records(path, [{"key": [country, topic, condition.label],
                                   "country": country, "topic": topic,
                                   "condition": condition.label, "knowledge": texts,
                                   "story": reply.text, "error": reply.error}
                                  for (_, country, topic, condition), texts, reply
                                  in zip(todo, found, replies)])
        if adapter is not None:
            graphs.forget(model, adapter)
    path.touch()
    return missing


def rate_stories(graphs: Graphs, model: str) -> None:
    """The judge's ratings of every story of `model` (a story that failed gets none)."""
    settings = graphs.config.evaluate.stories
    path = stories_path(graphs, model, ratings=True)
    check_provenance(path, {"stage": "evaluate ratings", "judge": model_label(settings.judge),
                            "prompt": digest(RATE, METRICS, RATING_LEAD),
                            "stories": file_digest(stories_path(graphs, model)),
                            "generation": settings.judge_generation.provenance()})
    done = {tuple(r["key"]) for r in read_records(path)}
    todo = [s for s in read_records(stories_path(graphs, model))
            if s["error"] is None and tuple(s["key"]) not in done]
    judge = graphs.loaded.chat(settings.judge, graphs.out / "remote-cache.jsonl")
    size = graphs.config.evaluate.questions_per_batch
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        chats = [[{"role": "user", "content": RATE.format(
            country=s["country"], topic=s["topic"], story=s["story"], metric=metric,
            meaning=meaning)}] for s in batch for metric, meaning in METRICS.items()]
        replies = iter(judge.reply(chats, settings.judge_generation, stream=start,
                                   prefix=RATING_LEAD))
        records = []
        for story in batch:
            answers = {metric: next(replies) for metric in METRICS}
            records.append({"key": story["key"], "condition": story["condition"],
                            "country": story["country"], "topic": story["topic"],
                            "answers": {m: a.text for m, a in answers.items()},
                            "ratings": {m: (rating(a.text) if a.error is None else None)
                                        for m, a in answers.items()}})
        append_records(path, records)
    path.touch()
