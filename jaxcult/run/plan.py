"""`jaxcult plan CONFIG`: will this config fit, on which mesh, at what batch, before any weight
or data is read.

The model is built as shapes from its architecture (a local config.json, or the built-in table
of the paper configs' models), with its PEFT modules, head and quantisation; every array is
placed on a mesh of simulated CPU devices as its logical axes ask; the config's real train
step is lowered and compiled for abstract inputs. XLA's per-device memory analysis of that
program is printed beside an analytic estimate from the shapes and the per-device token count
(`plan_figures.py`), with a verdict for a given device memory and, when it does not fit, the
changes that would make it fit.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from jaxcult.errors import UserError
from jaxcult.run.plan_report import format_plan

_MESH_SPEC = re.compile(r"^(data|fsdp|tensor)=(-1|\d+)$")
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_memory(text: str) -> int:
    """'80GiB', '80 GB', '8.5gib' -> bytes."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not found or found.group(2).lower() not in _UNITS:
        raise UserError(f"--device-memory: {text!r} is not a size such as 80GiB or 96GB")
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def mesh_overrides(devices: int | None, mesh: str | None) -> tuple[list[str], int | None]:
    """`--mesh data=2,fsdp=4` and `--devices N` -> (mesh.* overrides, device count)."""
    if mesh is None:
        return [], devices
    sizes = {}
    for item in mesh.split(","):
        found = _MESH_SPEC.match(item.strip())
        if not found:
            raise UserError(f"--mesh: {item!r} is not AXIS=SIZE with AXIS data, fsdp or tensor")
        sizes[found.group(1)] = int(found.group(2))
    sizes = {"data": 1, "fsdp": 1, "tensor": 1, **sizes}
    if -1 in sizes.values() and devices is None:
        raise UserError("--mesh: an axis of -1 needs --devices to say how many devices there are")
    product = 1
    for size in sizes.values():
        product *= size if size != -1 else 1
    count = devices if devices is not None else product
    return [f"mesh.{axis}={size}" for axis, size in sizes.items()], count


def simulate_devices(count: int | None) -> None:
    """Make JAX start with `count` CPU devices (before it is imported), or check that the
    running JAX already has them."""
    if count is None:
        return
    if count < 1:
        raise UserError(f"--devices: {count} (expected at least 1)")
    if "jax" in sys.modules:
        import jax

        if jax.device_count() != count:
            raise UserError(f"--devices {count}: JAX already started here with "
                            f"{jax.device_count()} device(s); run `jaxcult plan` as its own command")
        return
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"


def plan_command(config_path: Path | None, overrides: list[str], *, devices: int | None = None,
                 mesh: str | None = None, device_memory: str | None = None) -> str:
    """The plan of a config as a report (see the module docstring)."""
    extra, count = mesh_overrides(devices, mesh)
    memory = parse_memory(device_memory) if device_memory is not None else None
    simulate_devices(count)
    # no compilation cache: the compile time is part of what a plan reports
    from jaxcult.config_loading import load_config
    from jaxcult.run.plan_figures import make_plan

    config = load_config(config_path, [*overrides, *extra])
    return format_plan(make_plan(config, memory))
