"""A two-stage recipe written as a user would, outside the jaxcult package: `count` writes
numbered records one at a time (resuming after the last one written), `total` adds them up.
Registered by import path (`JAXCULT_RECIPES=toy_recipe:RECIPE`) or by an entry point in the
`jaxcult.recipes` group; either way it becomes `jaxcult toy STAGE CONFIG`.

`TOY_RECIPE_KILL_AFTER=N` makes `count` kill its own process after N new records, as a
preemption would (tests of resuming need no timing race)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from jaxcult.config import Section
from jaxcult.recipes import Recipe, Stage
from jaxcult.recipes.stage_files import append_records, read_records

KILL_AFTER = "TOY_RECIPE_KILL_AFTER"


class ToySettings(Section):
    name: str = "toy"
    numbers: int = Field(5, gt=0, description="records `count` writes (more extends the file)")
    scale: int = Field(1, description="each record's value is its number times this")


class Toy:
    """The context every stage receives."""

    def __init__(self, config: ToySettings, root: Path, out: Path) -> None:
        self.config, self.out = config, out
        self.numbers = out / "numbers.jsonl"


def count(toy: Toy) -> dict:
    done = {r["n"] for r in read_records(toy.numbers)}
    kill = int(os.environ.get(KILL_AFTER, "0"))
    written = 0
    for n in range(toy.config.numbers):
        if n not in done:
            append_records(toy.numbers, [{"n": n, "value": n * toy.config.scale}])
            written += 1
            if written == kill:
                os._exit(137)
    return {"records": toy.config.numbers, "written_now": written}


def total(toy: Toy) -> dict:
    values = [r["value"] for r in read_records(toy.numbers)]
    (toy.out / "total.json").write_text(json.dumps({"total": sum(values)}))
    return {"total": sum(values), "records": len(values)}


RECIPE = Recipe(
    name="toy",
    help="a toy recipe: count, then total",
    description="Writes numbered records, then adds them up.",
    settings=ToySettings,
    stages=(Stage("count", count, help="write the records",
                  provenance=lambda toy: {"scale": toy.config.scale}),
            Stage("total", total, help="add them up")),
    context=Toy,
)
