"""NICE invertible adapters (MAD-X): an additive coupling block on the embedding output.

With x = [x1, x2] split at half the width: y1 = x1 + F(x2), y2 = x2 + G(y1); the inverse is
x2 = y2 - G(y1), x1 = y1 - F(x2). F and G are down-act-up MLPs whose hidden width is their input
width // reduction_factor (AdapterHub's `inv_adapter: nice`, default factor 2). Unlike
AdapterHub's random init, the last layers of F and G start at zero, so a fresh adapter is the
identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.errors import UserError
from jaxcult.models.layers import Dense, activation, param


class CouplingNet(nnx.Module):
    def __init__(self, width_in: int, width_out: int, reduction_factor: int, non_linearity: str,
                 rngs: nnx.Rngs) -> None:
        hidden = int(width_in // reduction_factor)
        if hidden < 1:
            raise UserError(f"invertible adapter: reduction factor {reduction_factor} gives a "
                            f"zero-width bottleneck for width {width_in}")
        self.down = Dense(width_in, hidden, axes=(None, "adapter"), rngs=rngs)
        self.up = Dense(hidden, width_out, axes=("adapter", None), rngs=rngs)
        self.up.kernel = param(rngs, jax.nn.initializers.zeros, (hidden, width_out), jnp.float32,
                               ("adapter", None))
        self.act = activation(non_linearity)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.up(self.act(self.down(x)))


class NICEAdapter(nnx.Module):
    def __init__(self, hidden_size: int, *, non_linearity: str = "relu", reduction_factor: int = 2,
                 seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.split = hidden_size // 2
        rest = hidden_size - self.split
        self.F = CouplingNet(rest, self.split, reduction_factor, non_linearity, rngs)
        self.G = CouplingNet(self.split, rest, reduction_factor, non_linearity, rngs)
        self.non_linearity, self.reduction_factor = non_linearity, reduction_factor
        self.off = False  # `jaxcult.peft.switch.adapters_off`: the identity both ways

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.off:
            return x
        x1, x2 = x[..., :self.split], x[..., self.split:]
        y1 = x1 + self.F(x2)
        return jnp.concatenate([y1, x2 + self.G(y1)], axis=-1)

    def inverse(self, y: jax.Array) -> jax.Array:
        if self.off:
            return y
        y1, y2 = y[..., :self.split], y[..., self.split:]
        x2 = y2 - self.G(y1)
        return jnp.concatenate([y1 - self.F(x2), x2], axis=-1)
