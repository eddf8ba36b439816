"""Bottleneck adapters (Pfeiffer / Houlsby) inserted through the encoder's residual hooks.

A hook receives (hidden, residual, layer_norm) where the base model would compute
`layer_norm(hidden + residual)`. AdapterHub's bottleneck placement is reproduced: the adapter's
own residual is `hidden` (`residual_before_ln: true`) or LN(hidden + residual) (`false`); with
`original_ln_before` the adapter reads h = LN(hidden + residual), else `hidden`; it returns
up(act(down(h))) * scaling + its residual; with `original_ln_after` the block output is
LN(that + residual). Pfeiffer (`seq_bn`) uses ln_before and ln_after after the FFN; Houlsby
(`double_seq_bn`) skips ln_before and adds a second adapter after attention. The up-projection
starts at zero, so a fresh adapter leaves the model's outputs unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.config import PeftConfig
from jaxcult.errors import UserError
from jaxcult.models.layers import Dense, KeySplitter, activation, param

PLACEMENTS = {"pfeiffer": ("output_adapter",), "houlsby": ("attention_adapter", "output_adapter")}


class BottleneckAdapter(nnx.Module):
    def __init__(self, hidden_size: int, bottleneck: int, *, non_linearity: str, scaling: float,
                 residual_before_ln: bool = True, original_ln_before: bool = True,
                 original_ln_after: bool = True, rngs: nnx.Rngs) -> None:
        self.down = Dense(hidden_size, bottleneck, axes=("embed", "adapter"), rngs=rngs)
        self.up = Dense(bottleneck, hidden_size, axes=("adapter", "embed"), rngs=rngs)
        self.up.kernel = param(rngs, jax.nn.initializers.zeros, (bottleneck, hidden_size),
                               jnp.float32, ("adapter", "embed"))
        self.act = activation(non_linearity)
        self.scaling = scaling
        self.residual_before_ln = residual_before_ln
        self.original_ln_before, self.original_ln_after = original_ln_before, original_ln_after

    def __call__(self, hidden: jax.Array, residual: jax.Array, norm, keys: KeySplitter) -> jax.Array:
        """`norm` is the block's post-residual LayerNorm; None for pre-LN blocks (decoders)."""
        norm = norm if norm is not None else (lambda y: y)
        h = norm(hidden + residual) if self.original_ln_before else hidden
        adapter_residual = hidden if self.residual_before_ln else h
        out = self.up(self.act(self.down(h))) * self.scaling + adapter_residual
        return norm(out + residual) if self.original_ln_after else out


def bottleneck_size(hidden_size: int, reduction_factor: int | list[int], layer: int) -> int:
    factor = reduction_factor[layer] if isinstance(reduction_factor, list) else reduction_factor
    size = hidden_size // factor
    if size < 1:
        raise UserError(f"peft.reduction_factor: {factor} gives a zero-width bottleneck for "
                        f"hidden size {hidden_size} (layer {layer})")
    return size


def add_bottleneck_adapters(encoder: nnx.Module, config: PeftConfig, seed: int = 0) -> None:
    """Insert task adapters into every layer not in `leave_out` (in place)."""
    if config.kind not in PLACEMENTS:
        raise UserError(f"peft.kind: {config.kind!r} is not a bottleneck adapter kind")
    layers = encoder.layers
    rf = config.reduction_factor
    if isinstance(rf, list) and len(rf) != len(layers):
        raise UserError(f"peft.reduction_factor: {len(rf)} values for {len(layers)} layers")
    rngs = nnx.Rngs(seed)
    hidden = encoder.config.hidden_size
    for index, layer in enumerate(layers):
        if index in config.leave_out:
            continue
        for hook in PLACEMENTS[config.kind]:
            setattr(layer, hook, BottleneckAdapter(
                hidden, bottleneck_size(hidden, rf, index), non_linearity=config.non_linearity,
                scaling=config.scaling, residual_before_ln=config.residual_before_ln,
                original_ln_before=config.kind == "pfeiffer", rngs=rngs))
