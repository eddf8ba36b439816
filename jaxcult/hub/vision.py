"""Image-backbone weights: EfficientNet-Lite0's PyTorch state dict converted once to NNX.

The released weights are a PyTorch `.pth` (the `efficientnet-lite0` asset). `convert` reads it
with `torch.load(weights_only=True)` (no pickled code runs) and writes a safetensors file keyed
by NNX path; everything after that — feature extraction, training — reads only the converted
file, so torch is needed for the one conversion and never again.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcult import assets
from jaxcult.errors import UserError
from jaxcult.models.vision.efficientnet import EfficientNetLite

CACHE_DIR = Path("~/.cache/jaxcult/vision").expanduser()
_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_CONVS = {"_expand_conv": ("expand", "_bn0"), "_depthwise_conv": ("depthwise", "_bn1"),
          "_project_conv": ("project", "_bn2")}


def _conv_tensors(state: dict, conv: str, bn: str, target: str) -> dict[str, np.ndarray]:
    """One conv + batch norm: OIHW (depthwise: C,1,k,k) -> HWIO, BN vectors renamed."""
    out = {f"{target}.kernel": np.ascontiguousarray(state[f"{conv}.weight"].transpose(2, 3, 1, 0))}
    out.update({f"{target}.{ours}": state[f"{bn}.{theirs}"] for theirs, ours in _BN.items()})
    return out


def nnx_tensors(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The lukemelas-style EfficientNet state dict (`_conv_stem`, `_blocks.i._depthwise_conv`,
    ...) as NNX paths; the ImageNet classifier (`_fc`) is dropped."""
    out = _conv_tensors(state, "_conv_stem", "_bn0", "stem")
    out.update(_conv_tensors(state, "_conv_head", "_bn1", "head"))
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("_blocks.")})
    for i in blocks:
        for conv, (target, bn) in _CONVS.items():
            if f"_blocks.{i}.{conv}.weight" in state:
                out.update(_conv_tensors(state, f"_blocks.{i}.{conv}", f"_blocks.{i}.{bn}",
                                         f"blocks.{i}.{target}"))
    return out


def convert(source: str | Path, out: Path) -> Path:
    """The `.pth` of `source` (asset name or path) -> a safetensors file of NNX tensors."""
    from safetensors.numpy import save_file

    path = assets.get_asset(str(source)).path() if str(source) in assets.ASSETS else Path(source)
    if not path.is_file():
        raise UserError(f"{path}: EfficientNet weights not found")
    try:
        import torch
    except ImportError:
        raise UserError(f"{path}: converting PyTorch weights needs torch once "
                        f"(pip install torch==2.13.0)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a state dict, or one holding more than tensors
        raise UserError(f"{path}: not a PyTorch state dict ({type(error).__name__})") from None
    arrays = {k: v.numpy() for k, v in state.items() if hasattr(v, "numpy")}
    try:
        tensors = nnx_tensors(arrays)
    except KeyError as error:
        raise UserError(f"{path}: not an EfficientNet state dict (no tensor {error})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(partial))
    partial.replace(out)
    return out


def load_backbone(source: str | Path = "efficientnet-lite0") -> EfficientNetLite:
    """EfficientNet-Lite0 with pretrained weights: a converted `.safetensors` file, or an asset
    name / `.pth` path converted on first use into `~/.cache/jaxcult/vision/`."""
    from safetensors.numpy import load_file

    path = Path(str(source)).expanduser()
    if path.suffix != ".safetensors":
        cached = CACHE_DIR / f"{path.stem if path.suffix else path.name}.safetensors"
        path = cached if cached.is_file() else convert(source, cached)
    if not path.is_file():
        raise UserError(f"{path}: converted backbone weights not found")
    tensors = load_file(str(path))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: EfficientNetLite(rngs=nnx.Rngs(0))))
    filled = []
    for key, variable in nnx.to_flat_state(abstract):
        name = ".".join(map(str, key))
        if name not in tensors:
            raise UserError(f"{path}: missing tensor {name}")
        if tensors[name].shape != variable.shape:
            raise UserError(f"{path}: tensor {name} has shape {tensors[name].shape}, expected "
                            f"{variable.shape}")
        filled.append((key, variable.replace(value=jnp.asarray(tensors[name]))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))
