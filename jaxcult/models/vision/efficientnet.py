"""EfficientNet-Lite0 in NNX: the image backbone whose last feature map becomes grid tokens.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and a
fixed stem (32 channels) and head (1280): a stack of inverted-residual (MBConv) blocks. The
released weights were trained in TensorFlow, so convolutions use TF's SAME padding (extra pad
at the bottom/right when uneven) and batch norm uses eps 1e-3 with the running statistics
(the backbone only ever runs in inference mode here: features are computed once and cached).
Tensors are NHWC; kernels HWIO.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

BN_EPS = 1e-3
# TF EfficientNet-Lite preprocessing: (pixel - 127) / 128 on every channel
LITE_MEAN, LITE_STD = 127.0, 128.0


@dataclass(frozen=True)
class Stage:
    """`repeats` MBConv blocks; the first has `stride` and maps `inputs` -> `outputs` channels."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int


LITE0 = (Stage(1, 3, 1, 1, 32, 16), Stage(2, 3, 2, 6, 16, 24), Stage(2, 5, 2, 6, 24, 40),
         Stage(3, 3, 2, 6, 40, 80), Stage(3, 5, 1, 6, 80, 112), Stage(4, 5, 2, 6, 112, 192),
         Stage(1, 3, 1, 6, 192, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output size) of TF SAME padding along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise convolution (kernel [k, k, 1, C], SAME padding) as k*k shifted multiply-adds:
    the same numbers as a grouped `conv_general_dilated`, ~15x faster on XLA's CPU backend,
    whose grouped convolutions are slow."""
    k = kernel.shape[0]
    top, bottom, height = _same_padding(x.shape[1], k, stride)
    left, right, width = _same_padding(x.shape[2], k, stride)
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = jnp.zeros((x.shape[0], height, width, x.shape[3]), x.dtype)
    for i in range(k):
        for j in range(k):
            window = padded[:, i:i + (height - 1) * stride + 1:stride,
                            j:j + (width - 1) * stride + 1:stride]
            out = out + window * kernel[i, j, 0]
    return out


class ConvBN(nnx.Module):
    """Convolution (no bias, SAME padding) + inference batch norm (+ ReLU6 when `act`)."""

    def __init__(self, inputs: int, outputs: int, kernel: int, *, stride: int = 1,
                 depthwise: bool = False, act: bool = True, rngs: nnx.Rngs) -> None:
        fan_in = kernel * kernel * (1 if depthwise else inputs)
        shape = (kernel, kernel, 1 if depthwise else inputs, outputs)
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), shape) * (2.0 / fan_in) ** 0.5)
        self.scale = nnx.Param(jnp.ones((outputs,)))
        self.bias = nnx.Param(jnp.zeros((outputs,)))
        self.mean = nnx.BatchStat(jnp.zeros((outputs,)))
        self.var = nnx.BatchStat(jnp.ones((outputs,)))
        self.stride, self.groups, self.act = stride, outputs if depthwise else 1, act

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.groups > 1:
            y = depthwise_conv(x, self.kernel[...], self.stride)
        else:
            y = jax.lax.conv_general_dilated(x, self.kernel[...], (self.stride, self.stride), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = (y - self.mean[...]) * jax.lax.rsqrt(self.var[...] + BN_EPS) * self.scale[...] \
            + self.bias[...]
        return jnp.clip(y, 0.0, 6.0) if self.act else y


class MBConv(nnx.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int, expand: int, *,
                 rngs: nnx.Rngs) -> None:
        hidden = inputs * expand
        self.expand = ConvBN(inputs, hidden, 1, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride=stride, depthwise=True, rngs=rngs)
        self.project = ConvBN(hidden, outputs, 1, act=False, rngs=rngs)
        self.skip = stride == 1 and inputs == outputs

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


class EfficientNetLite(nnx.Module):
    """Pixels [batch, H, W, 3] (already normalised) -> the last feature map [batch, H/32, W/32,
    1280] (after the head convolution, before pooling)."""

    def __init__(self, stages: tuple[Stage, ...] = LITE0, *, rngs: nnx.Rngs) -> None:
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2, rngs=rngs)
        blocks = []
        for stage in stages:
            for i in range(stage.repeats):
                blocks.append(MBConv(stage.inputs if i == 0 else stage.outputs, stage.outputs,
                                     stage.kernel, stage.stride if i == 0 else 1, stage.expand,
                                     rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.head = ConvBN(stages[-1].outputs, HEAD_CHANNELS, 1, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        x = self.stem(pixels)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def preprocess(images: jax.Array, size: int) -> jax.Array:
    """uint8 images [batch, h, w, 3] -> float pixels [batch, size, size, 3], bilinearly resized
    and normalised as the Lite weights expect."""
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear")
    return (x - LITE_MEAN) / LITE_STD
