"""The probe protocol and registry.

A probe measures something about training every `every` steps (and at the end) from the
current trainable parameters and `batches` fresh training batches, and returns named values
per group (`{"value": {group: number}}`, or several such series). It never changes training:
it reads the loss function, not the train state. User probes register by import path
(`probes: [{name: mypkg.mod:MyProbe}]`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax

from jaxcult.config import ProbeConfig, settings_as
from jaxcult.errors import UserError
from jaxcult.registry import Registry, subclasses_of


@dataclass
class ProbeInput:
    """What a probe may read at a measurement."""

    step: int
    params: dict                                  # group -> parameters (every group)
    loss: Callable[[dict, dict], jax.Array]       # (params, batch) -> mean training loss
    batches: list[dict]                           # `batches` fresh training batches
    key: jax.Array
    # (params, batch) -> the mean-pooled output of the embeddings and of every layer, each
    # [rows, hidden] (encoder backbones; probes with `reads_languages` only)
    representations: Callable[[dict, dict], list[jax.Array]] | None = None
    # language -> fixed batches of its evaluation split's first examples (`reads_languages`)
    languages: dict[str, list[dict]] = field(default_factory=dict)
    source_language: str = ""


class Probe:
    """Base class: override `measure`; its own settings are its `Settings` (a subclass of
    `ProbeConfig`: keys of its `probes[]` entry)."""

    name = "probe"
    Settings: type[ProbeConfig] = ProbeConfig
    min_batches = 1
    reads_languages = False  # needs `representations` and the evaluation languages' batches

    def languages_wanted(self, available: list[str], source: str) -> list[str]:
        """The evaluation languages whose batches this probe reads (`reads_languages`)."""
        return []

    def examples_wanted(self) -> int:
        """How many first examples of each wanted language's evaluation split it reads."""
        return 0

    def __init__(self, settings: ProbeConfig, groups: list[str]) -> None:
        settings = settings_as(settings, self.Settings, "probes[]")
        if settings.batches < self.min_batches:
            raise UserError(f"probes: {self.name} needs batches >= {self.min_batches}, "
                            f"found {settings.batches}")
        self.settings, self.groups = settings, list(groups)

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        raise NotImplementedError


PROBES: Registry[type[Probe]] = Registry("probe", check=subclasses_of(Probe))


def register_probe(name: str):
    """Class decorator: register a `Probe` subclass under `name` (sets its `name`)."""
    return PROBES.named_class(name)


def resolve_probe(name: str) -> type[Probe]:
    return PROBES.get(name, "probes[].name")
