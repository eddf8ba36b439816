"""MAD-X (Pfeiffer et al., 2020): language adapters under task adapters, swapped per language.

Training stacks the source language's AdapterHub language adapter (frozen; with its invertible
adapter when it has one) under the trainable task adapters. For zero-shot evaluation each target
language's adapter replaces the source's in the frozen parameters; a language without an adapter
runs with the language adapter dropped (its up-projections and coupling outputs zeroed, which
makes every language module the identity). All language adapters must share one architecture,
so the jitted evaluation step is reused unchanged.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxcult.errors import UserError
from jaxcult.hub.adapterhub import HubAdapter, hub_key, install, read_adapterhub


def read_language_adapters(directories: dict[str, str], source: str) -> dict[str, HubAdapter]:
    if source not in directories:
        raise UserError(f"peft.language_adapters: no adapter for the source language {source!r} "
                        f"(MAD-X trains the task adapter on top of it)")
    return {lang: read_adapterhub(Path(path)) for lang, path in directories.items()}


def stack_source_adapter(backbone: nnx.Module, hubs: dict[str, HubAdapter], source: str,
                         seed: int = 0) -> None:
    install(backbone, hubs[source], "language", seed=seed)


def _is_dropped_to_identity(path: str) -> bool:
    """Parameters zeroed to drop a language adapter: the last layer of every language module."""
    return ".up." in f".{path}"


def with_language(frozen, hub: HubAdapter | None):
    """The frozen state with `hub`'s language adapter (None: dropped) in place of the current."""
    flat = []
    for path, variable in nnx.to_flat_state(frozen):
        dotted = ".".join(str(p) for p in path)
        found = hub_key(dotted, hub.name if hub else "_", "language")
        if found is None:
            flat.append((path, variable))
            continue
        current = variable[...]
        if hub is None:
            value = np.zeros(current.shape, current.dtype) if _is_dropped_to_identity(dotted) \
                else np.asarray(current)
        else:
            key, transpose = found
            if key not in hub.tensors:
                raise UserError(f"{hub.directory}: missing tensor {key!r}; all language adapters "
                                f"must share the source adapter's architecture")
            value = np.asarray(hub.tensors[key])
            value = value.T if transpose else value
            if value.shape != current.shape:
                raise UserError(f"{hub.directory}: tensor {key!r} has shape "
                                f"{hub.tensors[key].shape}; all language adapters must share the "
                                f"source adapter's architecture")
        sharding = getattr(current, "sharding", None)
        value = value.astype(current.dtype)
        flat.append((path, variable.replace(value=jax.device_put(value, sharding)
                                             if sharding is not None else value)))
    return nnx.from_flat_state(flat)


def language_states(frozen, hubs: dict[str, HubAdapter], languages: list[str]) -> dict:
    """Frozen state per evaluation language (checked for every language before training)."""
    return {lang: with_language(frozen, hubs.get(lang)) for lang in languages}
