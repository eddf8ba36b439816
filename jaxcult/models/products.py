"""Matrix products in a model's compute dtype, accumulated in float32 below 32 bits.

`x @ w` with bfloat16 (or float16) operands and a bfloat16 result is what the model asks for,
but XLA:CPU runs such a product at float32 speed (~250 GFLOP/s on this project's 2-core
Sapphire Rapids), while the same operands with a float32 result run on AMX (~1,500 GFLOP/s).
So below 32 bits the product accumulates in float32 and is cast back, in the forward and in both
backward products (a custom VJP: JAX's own transpose would multiply the float32 cotangent with
the 16-bit operand, i.e. in float32). Accelerators accumulate 16-bit products in float32
anyway; the result only gains accuracy. Float32 and wider products are plain `jnp.dot`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def matmul(x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
    """x [n, in] @ kernel [in, out], both cast to `dtype`, the result in `dtype`."""
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if jnp.dtype(dtype).itemsize >= 4:
        return jnp.dot(x, kernel)
    return _accumulated(x, kernel)


@jax.custom_vjp
def _accumulated(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.dot(x, kernel, preferred_element_type=jnp.float32).astype(x.dtype)


def _forward(x: jax.Array, kernel: jax.Array):
    return _accumulated(x, kernel), (x, kernel)


def _contract(a: jax.Array, b: jax.Array, a_axis: int, b_axis: int) -> jax.Array:
    """a . b over one axis of each, accumulated in float32. Contraction dimensions, not `.T`:
    XLA:CPU runs `g @ w.T` on the slow path (~200 GFLOP/s) but the same contraction written
    as dimension numbers on AMX (~1,100 GFLOP/s)."""
    return jax.lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _backward(saved, grad: jax.Array):
    x, kernel = saved
    grad = grad.astype(x.dtype)
    dx = _contract(grad, kernel, 1, 1).astype(x.dtype)
    dkernel = _contract(x, grad, 0, 0).astype(kernel.dtype)
    return dx, dkernel


_accumulated.defvjp(_forward, _backward)
