"""Switching a model's adapters off: the frozen backbone alone, from the same parameters.

Inside `adapters_off(model)` every LoRA factor, bottleneck adapter (and MAD-X stack) and NICE
adapter contributes nothing — each hook computes what the layer computes without an adapter,
exactly, whatever the adapter's options — so one program can run the policy and its reference
(preference optimisation: the reference is the base model) without a second copy of the
weights. The switch is a Python attribute read while tracing: use it inside the traced
function, on a model merged there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flax import nnx

from jaxcult.models.layers import Dense
from jaxcult.peft.bottleneck import AdapterStack, BottleneckAdapter
from jaxcult.peft.invertible import NICEAdapter


def _switches(model: nnx.Module) -> list[tuple[nnx.Module, str]]:
    found = []
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Dense) and module.lora_a is not None:
            found.append((module, "lora_off"))
        elif isinstance(module, BottleneckAdapter | AdapterStack | NICEAdapter):
            found.append((module, "off"))
    return found


def has_adapters(model: nnx.Module) -> bool:
    return bool(_switches(model))


@contextmanager
def adapters_off(model: nnx.Module) -> Iterator[nnx.Module]:
    """`model` with every adapter switched off inside the block (restored after)."""
    switches = _switches(model)
    for module, name in switches:
        setattr(module, name, True)
    try:
        yield model
    finally:
        for module, name in switches:
            setattr(module, name, False)
