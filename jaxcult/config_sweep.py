"""Schema of a sweep file (`jaxcult sweep FILE`): the run config every cell starts from, the
grid, the seeds and where the report goes, so a published comparison is one reviewable file.
`config` is relative to the file; `out` to the working directory (as `--out`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from jaxcult.config import Section


class SweepConfig(Section):
    config: str = Field(..., description="run YAML every cell starts from (relative to this file)")
    grid: dict[str, list[Any]] = Field(..., min_length=1, description="config key -> the values "
                                       "of that axis; the cells are every combination")
    seeds: int | list[int] = Field(..., description="N (seeds 0..N-1) or the list of seeds")
    baseline: str | None = Field(None, description="KEY=VALUE pairs (space-separated) naming "
                                 "the cell the others are compared with; default the first")
    out: str = Field(..., description="output folder (cells/, sweep.json, results.md, plots/)")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE applied to every "
                                 "cell (before the command line's)")

    @field_validator("grid")
    @classmethod
    def _axes_have_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
        return grid

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, seeds: int | list[int]) -> int | list[int]:
        if (seeds <= 0) if isinstance(seeds, int) else not seeds:
            raise ValueError("expected a positive number of seeds or a non-empty list")
        return seeds


class SweepFile(Section):
    sweep: SweepConfig
