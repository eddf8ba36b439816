"""`jaxcult assets` and `jaxcult plot`: offline assets, and a run's report rebuilt."""

from __future__ import annotations

from pathlib import Path

from jaxcult import assets
from jaxcult.errors import UserError
from jaxcult.report import write_report


def asset_command(action: str, names: list[str]) -> None:
    if action == "list":
        for asset in assets.ASSETS.values():
            state = "installed" if asset.installed() else "missing"
            print(f"{asset.name:24} {asset.kind:8} {state:9} {asset.description}")
        return
    if not names:
        raise UserError(f"assets {action}: name at least one asset ({', '.join(assets.ASSETS)})")
    for name in names:
        if action == "path":
            asset = assets.get_asset(name)
            for role in asset.files:
                print(asset.path(role))
        else:
            assets.install(name)


def plot_run(run_dir: Path) -> None:
    for path in write_report(run_dir):
        print(path)
