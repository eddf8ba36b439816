"""The CultureCare annotation schema as released, and the user's post texts joined to it.

The released files (`<Culture>_data.jsonl`, one post per line) carry each post's distress
phrases with an intensity, its cultural signals with a type, the poster's demographics, and
the annotated peer reply's support strategies, cultural signals and empathy label; the post
text itself is only a Reddit URL. Labels may be missing (null, empty, "None"): such a span is
kept, unlabelled. A label outside the schema's vocabularies below is an error naming the line.
Post texts come from a user-supplied `posts.jsonl` ({"post_id", "text"}), never from jaxcult.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcult.data.registry import read_checked_jsonl
from jaxcult.errors import UserError

CULTURES = ("Arabic", "Chinese", "German", "Jewish")
INTENSITIES = ("light", "moderate", "high")
SIGNAL_TYPES = ("Concepts", "Knowledge", "Values", "Norms and Morals", "Language", "Artifacts",
                "Demographics")
SUPPORT_STRATEGIES = ("Providing Suggestions", "Affirmation and Reassurance", "Self-disclosure",
                      "Information", "Reflection of Feelings", "Restatement or Paraphrasing",
                      "Questions", "Others")
UNLABELLED = {"", "none", "nan", "x", "unknown"}


@dataclass(frozen=True)
class Span:
    phrase: str
    label: str | None    # intensity, signal type or support strategy; None: not labelled


@dataclass(frozen=True)
class AnnotatedPost:
    culture: str
    post_id: str
    source: str                              # what the file has as the post text (a URL)
    distress: tuple[Span, ...]
    signals: tuple[Span, ...]
    demographics: dict[str, str]
    support: tuple[Span, ...]                # the annotated reply's support strategies
    reply_signals: tuple[Span, ...]
    empathy: int | None                      # the annotated reply's 1-5 empathy label
    text: str | None = field(default=None, compare=False)   # from the user's posts file


def _label(value: Any, vocabulary: tuple[str, ...], what: str, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in UNLABELLED):
        return None
    if value not in vocabulary:
        raise UserError(f"{where}: {what} {value!r} is not one of {', '.join(vocabulary)}")
    return value


def _spans(value: Any, key: str, vocabulary: tuple[str, ...], what: str, where: str
           ) -> tuple[Span, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UserError(f"{where}: {what}s must be a list of {{phrase, {key}}}")
    spans = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("phrase"), str):
            raise UserError(f"{where}: each {what} needs a text 'phrase' (got {item!r:.80})")
        spans.append(Span(item["phrase"].strip(), _label(item.get(key), vocabulary, what, where)))
    return tuple(spans)


def _empathy(value: Any, where: str) -> int | None:
    """The empathy label: "3 moderately empathetic", 3, or empty."""
    if value is None or str(value).strip() == "":
        return None
    head = str(value).strip().split()[0]
    if head not in {"1", "2", "3", "4", "5"}:
        raise UserError(f"{where}: empathy_score {value!r} does not start with a rating 1-5")
    return int(head)


def _section(record: dict, name: str, where: str) -> dict:
    value = record.get(name)
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected an object '{name}'")
    return value


def check_annotation(record: Any, where: str) -> AnnotatedPost:
    """One released annotation record, or one line naming the place and what is wrong."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object")
    for key in ("culture", "post_id"):
        if not isinstance(record.get(key), str | int) or not str(record[key]).strip():
            raise UserError(f"{where}: missing '{key}'")
    post, reply = _section(record, "post", where), _section(record, "response", where)
    demographics = post.get("demographic_info") or {}
    if not isinstance(demographics, dict | list):
        raise UserError(f"{where}: 'demographic_info' must be an object")
    return AnnotatedPost(
        culture=str(record["culture"]), post_id=str(record["post_id"]),
        source=str(post.get("text") or ""),
        distress=_spans(post.get("emotional_distress"), "intensity", INTENSITIES, "intensity",
                        where),
        signals=_spans(post.get("cultural_signals"), "type", SIGNAL_TYPES, "signal type", where),
        demographics={str(k): str(v) for k, v in dict(demographics or {}).items()},
        support=_spans(reply.get("emotional_support"), "strategy", SUPPORT_STRATEGIES,
                       "support strategy", where),
        reply_signals=_spans(reply.get("cultural_signals"), "type", SIGNAL_TYPES, "signal type",
                             where),
        empathy=_empathy(reply.get("empathy_score"), where))


def annotation_file(folder: Path, culture: str) -> Path:
    return folder / f"{culture}_data.jsonl"


def read_annotations(folder: Path, culture: str) -> list[AnnotatedPost]:
    """One culture's released file; its records must be of that culture, ids unique."""
    path = annotation_file(folder, culture)
    if not path.exists():
        raise UserError(f"{path}: no annotation file for culture {culture} (expected "
                        f"<annotations>/<Culture>_data.jsonl as released)")
    posts = read_checked_jsonl(path, check_annotation)
    seen: set[str] = set()
    for number, post in enumerate(posts, 1):
        if post.culture != culture:
            raise UserError(f"{path}: post {post.post_id!r} has culture {post.culture!r}, not "
                            f"{culture!r}")
        if post.post_id in seen:
            raise UserError(f"{path}: post id {post.post_id!r} appears twice")
        seen.add(post.post_id)
    return posts


def read_post_texts(path: Path) -> dict[str, str]:
    """`post_id -> text` from the user's posts file; a duplicate id or empty text is an error."""
    def check(record: Any, where: str) -> tuple[str, str]:
        if not isinstance(record, dict) or not isinstance(record.get("post_id"), str | int):
            raise UserError(f"{where}: expected an object with 'post_id' and 'text'")
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            raise UserError(f"{where}: post {record['post_id']!r} has no 'text'")
        return str(record["post_id"]), record["text"].strip()

    texts: dict[str, str] = {}
    for post_id, text in read_checked_jsonl(path, check):
        if post_id in texts:
            raise UserError(f"{path}: post id {post_id!r} appears twice")
        texts[post_id] = text
    return texts


def counts(posts: list[AnnotatedPost]) -> dict[str, int]:
    """What the annotations hold: posts, distress spans, post and reply signals, strategies."""
    return {"posts": len(posts),
            "distress_spans": sum(len(p.distress) for p in posts),
            "post_signals": sum(len(p.signals) for p in posts),
            "reply_signals": sum(len(p.reply_signals) for p in posts),
            "support_strategies": sum(len(p.support) for p in posts)}
