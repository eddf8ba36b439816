"""`jaxcult assets` and `jaxcult plot`: offline assets, and a run's report rebuilt."""

from __future__ import annotations

from pathlib import Path

from jaxcult import assets
from jaxcult.errors import UserError
from jaxcult.report import write_report


def asset_command(action: str, names: list[str]) -> str:
    """`list` every asset, show the `path`s of some, or `install` them; returns what to show."""
    if action == "list":
        return "\n".join(f"{a.name:24} {a.kind:8} {'installed' if a.installed() else 'missing':9} "
                         f"{a.description}" for a in assets.ASSETS.values())
    if not names:
        raise UserError(f"assets {action}: name at least one asset ({', '.join(assets.ASSETS)})")
    lines = []
    for name in names:
        if action == "path":
            asset = assets.get_asset(name)
            lines += [str(asset.path(role)) for role in asset.files]
        else:
            assets.install(name)
    return "\n".join(lines)


def plot_run(run_dir: Path) -> str:
    """Rebuild a run's plots and report; returns the files written, one a line."""
    return "\n".join(str(path) for path in write_report(run_dir))
