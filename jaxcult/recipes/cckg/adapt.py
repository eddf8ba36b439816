"""The adapt stage (beyond the paper): per country a LoRA adapter trained on its graph, as an
alternative to putting retrieved knowledge in the prompt.

Items, as chats: for each kept assertion the question its relation asks ("In Japan: if you
visit a shrine at New Year, what does the person usually do next?" -> the knowledge), and for
each maximal path its events told in order ("How does New Year usually unfold in Japan?" ->
"First, ... Then, ..."). A share of the items (`held_out_share`, by a hash of the item, so the
split does not depend on order) is kept for validation. The training run tracks the Fisher
information per adapter group (`fisher.track_every` > 0 in the train config); the last trace
per group says where the knowledge lands.

Files, under `adapt/`: `data/<country>/{train,validation}.jsonl`,
`adapters/<country>/{run,peft}`, `fisher.json` (per country each group's last trace, highest
first).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.recipes.adapters import check_lora_export, data_provenance, train_adapter
from jaxcult.recipes.cckg.config import RELATION_QUESTIONS
from jaxcult.recipes.cckg.context import Graphs
from jaxcult.recipes.stage_files import check_provenance, read_records
from jaxcult.rundir import write_text_atomic

log = logging.getLogger(__name__)


def narrative(nodes: list[str]) -> str:
    return " ".join(f"{'First' if i == 0 else 'Then'}, {step.rstrip('.')}."
                    for i, step in enumerate(nodes))


def items(graphs: Graphs, country: str, language: str) -> list[dict]:
    """The country's training chats (see the module docstring), in file order."""
    kinds = graphs.config.adapt.items
    made = []
    if "assertions" in kinds:
        for record in read_records(graphs.out / "assertions.jsonl"):
            if (record["country"], record["language"]) == (country, language):
                ask = RELATION_QUESTIONS[record["relation"]].format(action=record["action"])
                made.append(_chat(f"In {country}: {ask}", record["knowledge"]))
    if "narratives" in kinds:
        for record in read_records(graphs.out / "paths.jsonl"):
            if (record["country"], record["language"]) == (country, language):
                made.append(_chat(f"How does {record['subtopic']} usually unfold in {country}?",
                                  narrative(record["nodes"])))
    return list({json.dumps(m, ensure_ascii=False): m for m in made}.values())


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def held_out(item: dict, share: float) -> bool:
    text = json.dumps(item, ensure_ascii=False, sort_keys=True).encode()
    return int(hashlib.sha256(text).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def train_config(graphs: Graphs, data: Path | None = None, country: str = "all"):
    """The training run's config (for a country's data folder when given)."""
    from jaxcult.config_loading import load_config

    settings = graphs.config.adapt
    where = graphs.path(settings.train.config)
    extra = [f"data.manual_dir={data}"] if data is not None else []
    config = load_config(where, [*settings.train.overrides, "data.name=chat_jsonl",
                                 "task.name=causal_lm", "data.eval_split=validation", *extra,
                                 f"name={graphs.config.name}-adapt-{country}"])
    if not settings.train.export:
        raise UserError(f"{where}: cckg evaluate reads the exported adapter; set "
                        f"adapt.train.export: true")
    check_lora_export(config, True, where)
    if config.fisher.track_every <= 0:
        raise UserError(f"{where}: cckg adapt reports which layers take the knowledge in; set "
                        f"fisher.track_every > 0")
    return config


def trained_model(graphs: Graphs) -> str:
    """The model the adapt stage trains (its train config read once)."""
    return graphs.once(("adapt model",), lambda: train_config(graphs).model.name)


def countries(graphs: Graphs) -> list[tuple[str, str]]:
    """(country, language of its `adapt.graph`) for every country that has that graph."""
    found = []
    for country in dict.fromkeys(c.country for c in graphs.config.cultures):
        language = graphs.config.graph_language(country, graphs.config.adapt.graph)
        if language is not None:
            found.append((country, language))
    if not found:
        raise UserError(f"adapt.graph={graphs.config.adapt.graph!r}: no country has that graph")
    return found


def adapter_folder(graphs: Graphs, model: str, country: str) -> Path | None:
    """The country's exported adapter when `model` is the one the adapt stage trains, else
    None; an error when it is not trained yet."""
    if graphs.config.adapt is None or trained_model(graphs) != model:
        return None
    folder = graphs.out / "adapt" / "adapters" / country / "peft"
    if not (folder / "adapter_config.json").exists():
        raise UserError(f"{folder}: no adapter; run `jaxcult cckg adapt` first")
    return folder


def fisher_traces(run: Path) -> dict[str, float]:
    """Each group's tr(F) at the last tracked step, highest first."""
    records = [r for r in read_records(run / "fisher.jsonl") if r.get("estimator") != (
        "empirical_batch_in_step")]
    if not records:
        raise UserError(f"{run / 'fisher.jsonl'}: no Fisher traces (fisher.track_every is "
                        f"above the run's steps?)")
    trace = records[-1]["trace"]
    return dict(sorted(trace.items(), key=lambda item: -item[1]))


def adapt(graphs: Graphs) -> dict:
    """The adapt stage (see the module docstring)."""
    settings = graphs.config.adapt
    if settings is None:
        raise UserError("cckg adapt: the config has no `adapt` section (train.config)")
    facts, traces = {}, {}
    for country, language in countries(graphs):
        made = items(graphs, country, language)
        rows = {"train": [m for m in made if not held_out(m, settings.held_out_share)],
                "validation": [m for m in made if held_out(m, settings.held_out_share)]}
        for split, records in rows.items():
            if not records:
                raise UserError(f"cckg adapt: {country} ({language}) has no {split} item "
                                f"({len(made)} items; adapt.held_out_share keeps "
                                f"{settings.held_out_share:.0%} for validation)")
        data = (graphs.out / "adapt" / "data" / country).resolve()
        data.mkdir(parents=True, exist_ok=True)
        for split, records in rows.items():
            write_text_atomic(data / f"{split}.jsonl", "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        folder = graphs.out / "adapt" / "adapters" / country
        check_provenance(folder / "run", data_provenance(data))
        trained = train_adapter(train_config(graphs, data, country), folder, True,
                                f"cckg adapt {country}")
        traces[country] = fisher_traces(Path(trained["run"]))
        facts[country] = {"language": language, **{f"{s}_items": len(r) for s, r in rows.items()},
                          **trained, "top_fisher_groups": list(traces[country])[:3]}
    write_text_atomic(graphs.out / "adapt" / "fisher.json",
                      json.dumps(traces, indent=1, ensure_ascii=False) + "\n")
    return facts
