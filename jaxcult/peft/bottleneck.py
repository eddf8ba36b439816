"""Bottleneck adapters (Pfeiffer, Houlsby, Parallel) inserted through the layers' residual hooks.

A hook receives (hidden, residual, layer_norm) where the base model would compute
`layer_norm(hidden + residual)` (`layer_norm` is None in pre-LN decoders: identity). AdapterHub's
placement is reproduced exactly:

- sequential (`seq_bn` = Pfeiffer, `double_seq_bn` = Houlsby): with `original_ln_before` the
  adapter reads h = LN(hidden + residual), else `hidden`; its own residual is `hidden`
  (`residual_before_ln: true`) or h; it computes a = up(act(down(h))) * scaling + that residual;
  with `original_ln_after` the block output is LN(a + residual), else a. Pfeiffer sits after the
  FFN with ln_before and ln_after; Houlsby skips ln_before and adds a second adapter after
  attention.
- parallel (`par_bn`): the adapter reads the block input `residual`; the output is
  LN(hidden + up(act(down(residual))) * scaling + residual).
- `Stack(language, task)` (MAD-X): the language adapter transforms the hidden states (without
  the final LN), the task adapter reads that result, and the task adapter's `original_ln_after`
  closes the block.

The up-projection starts at zero, so a fresh adapter leaves the model's outputs unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.config import PeftConfig
from jaxcult.errors import UserError
from jaxcult.models.layers import ACTIVATIONS, Dense, KeySplitter, activation, param

PLACEMENTS = {"pfeiffer": ("output_adapter",), "houlsby": ("attention_adapter", "output_adapter"),
              "parallel": ("output_adapter",)}
# AdapterHub's defaults per kind where PeftConfig leaves a field unset (None)
KIND_DEFAULTS = {"pfeiffer": {"original_ln_before": True, "scaling": 1.0},
                 "houlsby": {"original_ln_before": False, "scaling": 1.0},
                 "parallel": {"original_ln_before": False, "scaling": 4.0}}


def _identity(x: jax.Array) -> jax.Array:
    return x


class BottleneckAdapter(nnx.Module):
    """down (hidden -> bottleneck), activation, up (bottleneck -> hidden, zero-initialised)."""

    def __init__(self, hidden_size: int, bottleneck: int, *, non_linearity: str, scaling: float,
                 residual_before_ln: bool = True, original_ln_before: bool = True,
                 original_ln_after: bool = True, parallel: bool = False, rngs: nnx.Rngs) -> None:
        self.down = Dense(hidden_size, bottleneck, axes=("embed", "adapter"), rngs=rngs)
        self.up = Dense(bottleneck, hidden_size, axes=("adapter", "embed"), rngs=rngs)
        self.up.kernel = param(rngs, jax.nn.initializers.zeros, (bottleneck, hidden_size),
                               jnp.float32, ("adapter", "embed"))
        self.non_linearity = non_linearity
        self.act = activation(non_linearity)
        self.scaling = scaling
        self.residual_before_ln = residual_before_ln
        self.original_ln_before, self.original_ln_after = original_ln_before, original_ln_after
        self.parallel = parallel
        self.off = False  # `jaxcult.peft.switch.adapters_off`: the hook as without an adapter

    def delta(self, x: jax.Array) -> jax.Array:
        return self.up(self.act(self.down(x))) * self.scaling

    def transform(self, hidden: jax.Array, residual: jax.Array, norm) -> jax.Array:
        """The sequential adapter's output before the block's closing residual + LN."""
        h = norm(hidden + residual) if self.original_ln_before else hidden
        return self.delta(h) + (hidden if self.residual_before_ln else h)

    def close(self, out: jax.Array, residual: jax.Array, norm) -> jax.Array:
        return norm(out + residual) if self.original_ln_after else out

    def __call__(self, hidden: jax.Array, residual: jax.Array, norm, keys: KeySplitter) -> jax.Array:
        norm = norm if norm is not None else _identity
        if self.off:
            return norm(hidden + residual)
        if self.parallel:
            return self.close(hidden + self.delta(residual), residual, norm)
        return self.close(self.transform(hidden, residual, norm), residual, norm)


class AdapterStack(nnx.Module):
    """MAD-X `Stack(language, task)` at one hook; either part may be absent (None)."""

    def __init__(self, language: BottleneckAdapter | None, task: BottleneckAdapter | None) -> None:
        for part in (language, task):
            if part is not None and part.parallel:
                raise UserError("peft: parallel adapters cannot be stacked with language adapters")
        self.language, self.task = nnx.data(language), nnx.data(task)
        self.off = False

    def __call__(self, hidden: jax.Array, residual: jax.Array, norm, keys: KeySplitter) -> jax.Array:
        if self.off:
            return (norm if norm is not None else _identity)(hidden + residual)
        if self.language is None:
            return self.task(hidden, residual, norm, keys)
        if self.task is None:
            return self.language(hidden, residual, norm, keys)
        norm = norm if norm is not None else _identity
        hidden = self.language.transform(hidden, residual, norm)
        return self.task.close(self.task.transform(hidden, residual, norm), residual, norm)


def bottleneck_size(hidden_size: int, reduction_factor: int | list[int], layer: int) -> int:
    factor = reduction_factor[layer] if isinstance(reduction_factor, list) else reduction_factor
    size = int(hidden_size // factor)
    if size < 1:
        raise UserError(f"peft.reduction_factor: {factor} gives a zero-width bottleneck for "
                        f"hidden size {hidden_size} (layer {layer})")
    return size


def resolved(config: PeftConfig, field: str):
    """A PeftConfig field, or AdapterHub's default for the adapter kind when it is unset."""
    value = getattr(config, field)
    return KIND_DEFAULTS[config.kind][field] if value is None else value


def make_adapters(model: nnx.Module, config: PeftConfig, seed: int = 0
                  ) -> dict[tuple[int, str], BottleneckAdapter]:
    """Fresh adapters for every (layer, hook) the config places, not yet attached."""
    if config.kind not in PLACEMENTS:
        raise UserError(f"peft.kind: {config.kind!r} is not a bottleneck adapter kind")
    if config.non_linearity not in ACTIVATIONS:
        raise UserError(f"peft.non_linearity: unknown {config.non_linearity!r} "
                        f"(known: {', '.join(ACTIVATIONS)})")
    layers = model.layers
    rf = config.reduction_factor
    if isinstance(rf, list) and len(rf) != len(layers):
        raise UserError(f"peft.reduction_factor: {len(rf)} values for {len(layers)} layers")
    rngs = nnx.Rngs(seed)
    hidden = model.config.hidden_size
    hooks = [h for h in PLACEMENTS[config.kind] if hasattr(layers[0], h)]
    adapters = {}
    for index in range(len(layers)):
        if index in config.leave_out:
            continue
        for hook in hooks:
            adapters[index, hook] = BottleneckAdapter(
                hidden, bottleneck_size(hidden, rf, index), non_linearity=config.non_linearity,
                scaling=resolved(config, "scaling"), residual_before_ln=config.residual_before_ln,
                original_ln_before=resolved(config, "original_ln_before"),
                original_ln_after=config.original_ln_after, parallel=config.kind == "parallel",
                rngs=rngs)
    return adapters


def add_bottleneck_adapters(model: nnx.Module, config: PeftConfig, seed: int = 0) -> None:
    """Insert task adapters into every layer not in `leave_out` (in place)."""
    for (index, hook), adapter in make_adapters(model, config, seed).items():
        setattr(model.layers[index], hook, adapter)
