"""LoRA (Hu et al., 2021): low-rank updates W + (alpha / r) A B on chosen projections.

Factors live inside the targeted `Dense` modules (`lora_a` [in, r], `lora_b` [r, out]), so the
base weights keep their paths and checkpoints load and export unchanged. `lora_b` starts at zero:
a fresh LoRA model equals its base. Targets are short aliases (`q`, `k`, `v`, `o`, `ffn_in`,
`ffn_out`, `gate`, `up`, `down`), attribute names (`query`, `q_proj`), or regular expressions
matched against the full module path (`layers\\.[0-5]\\.query`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcult.errors import UserError
from jaxcult.models.layers import Dense

ALIASES = {
    "q": ("query", "q_proj"), "k": ("key", "k_proj"), "v": ("value", "v_proj"),
    "o": ("attention_output", "o_proj"), "ffn_in": ("intermediate",), "ffn_out": ("output",),
    "gate": ("gate_proj",), "up": ("up_proj",), "down": ("down_proj",),
}


def _matches(path: str, targets: list[str]) -> bool:
    name = path.rsplit(".", 1)[-1]
    for target in targets:
        if name in ALIASES.get(target, ()) or name == target or re.fullmatch(target, path):
            return True
    return False


def lora_targets(model: nnx.Module, targets: list[str], leave_out: list[int] = ()
                 ) -> list[tuple[str, Dense]]:
    """(path, Dense) of every layer projection a target selects, outside the `leave_out`
    layers; error if none is selected."""
    found, names = [], set()
    for path, module in nnx.iter_modules(model):
        dotted = ".".join(str(p) for p in path)
        layer = re.search(r"(?:^|\.)layers\.(\d+)\.", dotted)
        if isinstance(module, Dense) and layer:
            names.add(dotted.rsplit(".", 1)[-1])
            if int(layer.group(1)) not in leave_out and _matches(dotted, targets):
                found.append((dotted, module))
    if not found:
        raise UserError(f"peft.target_modules: {targets} match no projection of this model "
                        f"(its projections: {', '.join(sorted(names))}; aliases: "
                        f"{', '.join(ALIASES)}; or path regexes)")
    return found


def add_lora(model: nnx.Module, targets: list[str], r: int, alpha: float, seed: int = 0,
             dropout: float = 0.0, leave_out: list[int] = ()) -> list[str]:
    """Attach LoRA factors (A ~ Kaiming-uniform as in PEFT, B = 0); returns the target paths.

    `dropout` applies to the LoRA branch's input only, in training (as PEFT's `lora_dropout`).
    """
    rngs = nnx.Rngs(seed)
    init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    paths = []
    for path, dense in lora_targets(model, targets, leave_out):
        fan_in, fan_out = dense.kernel_shape
        set_factors(dense, init(rngs.params(), (fan_in, r), jnp.float32),
                    jnp.zeros((r, fan_out), jnp.float32), alpha / r)
        dense.lora_dropout = dropout
        paths.append(path)
    return paths


def saved_modules(model: nnx.Module, names: list[str]) -> tuple[str, ...]:
    """Module paths that `modules_to_save` names (a full path or a module's attribute name).

    These modules are trained in full next to the LoRA factors (e.g. `embed_tokens`, `lm_head`).
    """
    paths = [".".join(str(p) for p in path) for path, _ in nnx.iter_modules(model) if path]
    found = []
    for name in names:
        hits = [p for p in paths if p == name or p.endswith("." + name)]
        if not hits:
            raise UserError(f"peft.modules_to_save: {name!r} matches no module of this model")
        found.extend(h for h in hits if h not in found)
    return tuple(found)


def train_in_float32(model: nnx.Module, paths: Sequence[str]) -> None:
    """Give the modules trained in full float32 parameters whatever the model's dtype, as PEFT's
    `modules_to_save` copies are after `prepare_model_for_kbit_training` (Adam on float16
    weights loses the small updates). The forward still casts them to the compute dtype."""
    modules = {".".join(str(p) for p in path): m for path, m in nnx.iter_modules(model) if path}

    def widen(x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == jnp.float32:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):  # an abstract model (jaxcult plan)
            return jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
        return x.astype(jnp.float32)

    for path in paths:
        module = modules[path]
        nnx.update(module, jax.tree.map(widen, nnx.state(module, nnx.Param)))


def set_factors(dense: Dense, a: jax.Array, b: jax.Array, scaling: float) -> None:
    """Attach LoRA factors A [in, r] and B [r, out] with logical axes derived from the kernel."""
    in_axis, out_axis = dense.kernel_axes
    dense.lora_a = nnx.Param(jnp.asarray(a), axes=(in_axis, "adapter"))
    dense.lora_b = nnx.Param(jnp.asarray(b), axes=("adapter", out_axis))
    dense.lora_scaling = scaling


def lora_modules(model: nnx.Module) -> list[tuple[str, Dense]]:
    return [(".".join(str(p) for p in path), m) for path, m in nnx.iter_modules(model)
            if isinstance(m, Dense) and m.lora_a is not None]


def merge(model: nnx.Module) -> None:
    """Fold every LoRA update into its base kernel and remove the factors (in place)."""
    quantized = [path for path, dense in lora_modules(model) if dense.quantized]
    if quantized:
        raise UserError(f"LoRA cannot be merged into the quantised kernel of {quantized[0]} "
                        f"(the update is not 4/8-bit): keep the adapter unmerged")
    for _, dense in lora_modules(model):
        delta = dense.lora_a[...] @ dense.lora_b[...] * dense.lora_scaling
        dense.kernel[...] = dense.kernel[...] + delta.astype(dense.kernel.dtype)
        dense.lora_a, dense.lora_b = nnx.data(None), nnx.data(None)


def unmerge(model: nnx.Module, factors: dict[str, tuple[jax.Array, jax.Array, float]]) -> None:
    """Undo `merge` given the factors it folded in (`{path: (A, B, scaling)}`)."""
    modules = dict(nnx.iter_modules(model))
    for path, (a, b, scaling) in factors.items():
        dense = modules[tuple(int(p) if p.isdigit() else p for p in path.split("."))]
        dense.kernel[...] = dense.kernel[...] - (a @ b * scaling).astype(dense.kernel.dtype)
        set_factors(dense, a, b, scaling)


def factors_of(model: nnx.Module) -> dict[str, tuple[jax.Array, jax.Array, float]]:
    return {path: (d.lora_a[...], d.lora_b[...], d.lora_scaling) for path, d in lora_modules(model)}
