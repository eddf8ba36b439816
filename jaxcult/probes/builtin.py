"""The built-in probes (docs/probes.md): per-group gradient norm, update / weight ratio, top
Hessian eigenvalue, gradient noise scale, and source/target representation similarity (CKA)."""

from __future__ import annotations

import jax
import numpy as np
from pydantic import Field

from jaxcult.config import ProbeConfig
from jaxcult.errors import UserError
from jaxcult.probes import measures
from jaxcult.probes.base import Probe, ProbeInput, register_probe


def _per_group(groups: list[str], values) -> dict[str, float]:
    return {g: float(v) for g, v in zip(groups, values)}


@register_probe("grad_norm")
class GradNorm(Probe):
    """||∇_g L|| per group, of the mean loss over the probe's batches."""

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        grads = measures.mean_grads(probe_input.loss, probe_input.params, probe_input.batches)
        return {"value": _per_group(self.groups, measures.group_norms(grads, self.groups))}


@register_probe("update_ratio")
class UpdateRatio(Probe):
    """||θ_t − θ_s|| / ||θ_s|| per group since the previous measurement s (none at the first,
    nor at the first after a resume: the previous parameters are not checkpointed)."""

    def __init__(self, config, groups) -> None:
        super().__init__(config, groups)
        self.previous: dict | None = None

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        current = jax.device_get(probe_input.params)
        previous, self.previous = self.previous, current
        if previous is None:
            return {}
        return {"value": _per_group(self.groups, measures.update_ratios(previous, current,
                                                                         self.groups))}


class HessianSettings(ProbeConfig):
    iters: int = Field(20, gt=0, description="power iterations per estimate")


@register_probe("hessian_top")
class HessianTop(Probe):
    """The top eigenvalue λ_max (`value`) and the spectral radius ρ (`radius`) of each group's
    Hessian block on the first probe batch, by power iteration on Hessian-vector products
    (`iters` per estimate, default 20; 2 x iters HVPs per group)."""

    Settings = HessianSettings

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        iters = self.settings.iters
        keys = jax.random.split(probe_input.key, len(self.groups))
        found = {g: measures.hessian_extremes(probe_input.loss, probe_input.params, g,
                                              probe_input.batches[0], iters=iters, key=k)
                 for g, k in zip(self.groups, keys)}
        return {"value": {g: top for g, (top, _) in found.items()},
                "radius": {g: radius for g, (_, radius) in found.items()}}


@register_probe("noise_scale")
class NoiseScale(Probe):
    """The simple gradient noise scale B_simple per group from the probe's batches (≥ 2),
    with its two estimates |G|² and tr(Σ)."""

    min_batches = 2

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        grads = [jax.grad(probe_input.loss)(probe_input.params, b) for b in probe_input.batches]
        size = next(iter(probe_input.batches[0].values())).shape[0]
        found = measures.noise_scale(grads, self.groups, size)
        return {name: _per_group(self.groups, np.asarray(values)) for name, values in found.items()}


class CkaSettings(ProbeConfig):
    targets: str | list[str] | None = Field(
        None, description="target languages (a list or comma-separated); default every "
        "evaluation language but the source")
    examples: int = Field(256, ge=2, description="the first N examples of each split")


@register_probe("cka")
class SourceTargetCka(Probe):
    """Linear CKA (Kornblith et al. 2019) between the source language's and each target
    language's representations of the same evaluation examples, at the output of the embeddings
    and of every layer (mean over tokens): one series per target, keyed `embeddings`,
    `layer_<i>`. The evaluation splits must be parallel (translations, in the same order, as
    XCOPA, XNLI, xGQA, easy-VQA and the built-in dataset are). Options: `targets` (comma-separated
    languages, default every evaluation language but the source) and `examples` (the first N of
    each split, default 256).
    Reads no training batch."""

    Settings = CkaSettings
    min_batches = 0
    reads_languages = True

    def languages_wanted(self, available: list[str], source: str) -> list[str]:
        targets = self.settings.targets
        if isinstance(targets, str):
            targets = targets.split(",")
        targets = ([t for t in available if t != source] if targets is None else
                   [t.strip() for t in targets if t.strip()])
        unknown = [t for t in targets if t not in available or t == source]
        if unknown or not targets:
            raise UserError(f"probes: cka target {unknown[0] if unknown else '(none)'!r} is not an "
                            f"evaluation language other than the source {source!r} (evaluated: "
                            f"{', '.join(available)})")
        return [source, *targets]

    def examples_wanted(self) -> int:
        return self.settings.examples

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        outputs = {lang: [np.concatenate(per_layer) for per_layer in zip(
            *(jax.device_get(probe_input.representations(probe_input.params, b)) for b in batches))]
            for lang, batches in probe_input.languages.items()}
        source = outputs.pop(probe_input.source_language)
        names = ["embeddings"] + [f"layer_{i}" for i in range(len(source) - 1)]
        return {lang: {name: measures.linear_cka(x, y) for name, x, y in zip(names, source, layers)}
                for lang, layers in outputs.items()}
