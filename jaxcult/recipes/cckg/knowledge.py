"""The graph's knowledge as texts a prompt can carry, and retrieval of the texts closest to a
query (the paper: semantic search between the question and the verbalised assertions or
paths; 5 assertions or 1 path in the prompt)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.eval.sentence_embeddings import top_k
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.stage_files import read_records

UNITS = {"assertions": "assertions.jsonl", "path": "paths.jsonl"}


def graph_texts(graphs: Graphs, unit: str, country: str, language: str) -> list[str]:
    """A graph's assertions (their if-then sentences) or paths (as `evaluate.path_text`
    renders them), in file order, each text once."""
    path: Path = graphs.out / UNITS[unit]
    if not path.exists():
        raise UserError(f"{path}: not found; run `jaxcult cckg paths` first")
    field = "sentence" if unit == "assertions" else graphs.config.evaluate.path_text
    records = graphs.once(("records", path), lambda: read_records(path))
    texts = [r[field] for r in records if r["country"] == country and r["language"] == language]
    return list(dict.fromkeys(t for t in texts if t.strip()))


def retrieve(graphs: Graphs, queries: list[str], texts: list[str], k: int) -> list[list[int]]:
    """Per query, the indices of its k most similar texts (cosine of the retriever's
    embeddings), most similar first."""
    if not texts:
        return [[] for _ in queries]
    settings = graphs.config.evaluate.retriever
    return top_k(graphs.embed_with(settings, queries), graphs.embed_with(settings, texts), k)


@dataclass(frozen=True)
class Condition:
    """One way of asking: `kind` none / cot / assertions / path / adapter; a retrieval
    condition reads the graph in `language`."""

    kind: str
    language: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.language}" if self.language else self.kind


def conditions(graphs: Graphs, country: str, kinds: list[str]) -> tuple[list[Condition], list[str]]:
    """The conditions `kinds` make for `country` (a retrieval kind once per configured graph
    the country has), and the (kind, graph) pairs it has no graph for."""
    made, missing = [], []
    for kind in kinds:
        if kind not in UNITS:
            made.append(Condition(kind))
            continue
        for graph in graphs.config.evaluate.graphs:
            language = graphs.config.graph_language(country, graph)
            if language is None:
                missing.append(f"{kind}:{graph}")
            else:
                made.append(Condition(kind, language))
    return made, missing
