"""The state every CLCA stage reads: config, cultures, scenarios, output folder, models."""

from __future__ import annotations

from pathlib import Path

from jaxcult.data.cultures import Culture, find_culture, load_cultures
from jaxcult.data.scenarios import Person, Scenario, read_scenarios
from jaxcult.errors import UserError
from jaxcult.generation.chat import ChatModel
from jaxcult.recipes.clca.config import ClcaConfig
from jaxcult.recipes.loaded_models import LoadedModels
from jaxcult.recipes.stage_files import read_records
from jaxcult.remote.settings import ModelSpec


class Pipeline:
    """A resolved CLCA config with its scenarios, cultures, output folder and loaded models."""

    def __init__(self, config: ClcaConfig, root: Path, out: Path,
                 models: dict[str, ChatModel] | None = None) -> None:
        self.config, self.root, self.out = config, root, out
        extra = self.path(config.cultures_file) if config.cultures_file else None
        self.known = load_cultures(extra)
        self.cultures = {c.key: c for c in (find_culture(self.known, name, "clca.cultures")
                                            for name in config.cultures)}
        self.scenarios = self._scenarios()
        self.loaded = LoadedModels("clca", chats=models)

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def _scenarios(self) -> dict[str, list[Scenario]]:
        folder = self.path(self.config.scenarios)
        found = {}
        for key, culture in self.cultures.items():
            file = folder / f"{key}.jsonl"
            scenarios = read_scenarios(file)
            for s in scenarios:
                named = find_culture(self.known, s.culture, f"{file}: scenario {s.id}")
                if named.key != key:
                    raise UserError(f"{file}: scenario {s.id} is set in {s.culture!r}, but the "
                                    f"file holds the {culture.adjective} scenarios")
            found[key] = scenarios[:self.config.scenarios_per_culture]
        return found

    def model(self, spec: ModelSpec) -> ChatModel:
        """The chat model a stage names: loaded once, or a client of a remote one (whose
        answers are kept in `remote-cache.jsonl` in the output folder)."""
        return self.loaded.chat(spec, self.out / "remote-cache.jsonl")

    def scenario_of(self, record: dict) -> tuple[Scenario, Culture]:
        scenario = record["scenario"]
        people = [Person(**scenario[k]) for k in ("person1", "person2")]
        return (Scenario(scenario["id"], scenario["culture"], scenario["setting"], *people),
                self.cultures[record["culture"]])


def stage_input(pipeline: Pipeline, name: str, made_by: str) -> list[dict]:
    records = read_records(pipeline.out / name)
    if not records:
        raise UserError(f"{pipeline.out / name}: no records; run `jaxcult clca {made_by}` first")
    wanted = [r for r in records if r.get("culture") in pipeline.cultures]
    if not wanted:
        raise UserError(f"{pipeline.out / name}: no records of the cultures "
                        f"{', '.join(pipeline.cultures)}")
    return wanted
