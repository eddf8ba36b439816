"""The cultural commonsense graph: assertions as edges, node merging, maximal paths.

An assertion "If [action], then [knowledge]" with a relation is an edge action -> knowledge
of its subtopic's directed graph. Following the official processing (LLMs as Cultural
Archives, EACL 2026): duplicate (action, knowledge) pairs, self-loops, nodes that are a
relation's name, and the reverse of an earlier pair are dropped (the first kept); per subtopic,
all simple paths of two or more nodes start at the initial events, and a path is kept only if
no longer path contains all of its nodes (its maximal paths). A path renders with relations
(`A---xNext--->B`, one edge per line) or without (`- A → B`).

Chain expansion merges a new node into a known one when their embeddings' cosine similarity is
above a threshold (0.8 in the paper): the first known node above it, in the known nodes' order,
as the official code does (`merge="first"`), or the most similar one (`merge="best"`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

RELATIONS = ("xEffect", "xNext", "xNeed", "oNext", "oEffect")
NEXT_RELATIONS = ("xNext", "oNext")   # the relations chain expansion follows


@dataclass(frozen=True)
class Edge:
    source: str       # the action
    target: str       # the knowledge
    relation: str
    subtopic: str


def clean_edges(edges: Iterable[Edge]) -> tuple[list[Edge], dict[str, int]]:
    """The edges the graph keeps, and how many were dropped for each reason. Pairs are compared
    across subtopics, as the official processing does per country."""
    kept: list[Edge] = []
    seen: set[tuple[str, str]] = set()
    dropped = {"duplicate": 0, "self_loop": 0, "relation_as_node": 0, "reversed_pair": 0}
    for edge in edges:
        pair = (edge.source, edge.target)
        if edge.source == edge.target:
            dropped["self_loop"] += 1
        elif edge.source in RELATIONS or edge.target in RELATIONS:
            dropped["relation_as_node"] += 1
        elif pair in seen:
            dropped["duplicate"] += 1
        elif (edge.target, edge.source) in seen:
            dropped["reversed_pair"] += 1
        else:
            seen.add(pair)
            kept.append(edge)
    return kept, dropped


def merge_targets(similarity: np.ndarray, threshold: float,
                  merge: Literal["first", "best"] = "first") -> list[int | None]:
    """For each new node (row of [new, known] cosine similarities), the known node it merges
    into (similarity strictly above `threshold`), or None when it stays a new node."""
    targets: list[int | None] = []
    for row in np.asarray(similarity, np.float64):
        above = np.flatnonzero(row > threshold)
        if not len(above):
            targets.append(None)
        elif merge == "first":
            targets.append(int(above[0]))
        else:
            targets.append(int(above[np.argmax(row[above])]))
    return targets


def simple_paths(edges: Sequence[Edge], source: str) -> list[list[str]]:
    """Every simple path of two or more nodes starting at `source` (depth first)."""
    successors: dict[str, list[str]] = {}
    for edge in edges:
        successors.setdefault(edge.source, []).append(edge.target)
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for node in successors.get(path[-1], []):
            if node not in path:
                found.append([*path, node])
                walk(found[-1])

    walk([source])
    return found


def maximal_paths(edges: Sequence[Edge], sources: Iterable[str]) -> list[list[str]]:
    """The paths from `sources` that no longer path (from any source) contains every node of,
    longest first (then in the order they were found)."""
    nodes = {e.source for e in edges} | {e.target for e in edges}
    paths = [path for source in dict.fromkeys(sources) if source in nodes
             for path in simple_paths(edges, source)]
    paths.sort(key=len, reverse=True)
    kept: list[list[str]] = []
    kept_sets: list[frozenset[str]] = []
    for path in paths:
        members = frozenset(path)
        if not any(len(other) > len(path) and members <= other_set
                   for other, other_set in zip(kept, kept_sets)):
            kept.append(path)
            kept_sets.append(members)
    return kept


def relations_along(edges: Sequence[Edge], path: Sequence[str]) -> list[str]:
    relation = {(e.source, e.target): e.relation for e in edges}
    return [relation[a, b] for a, b in zip(path, path[1:])]


def render(path: Sequence[str], relations: Sequence[str] | None = None) -> str:
    """A path as text: `A---rel--->B` per edge with relations, `- A → B` per edge without."""
    if relations is not None:
        return "\n".join(f"{a}---{r}--->{b}" for a, r, b in zip(path, relations, path[1:]))
    return "\n".join(f"- {a} → {b}" for a, b in zip(path, path[1:]))
