"""The quantised weights of a GGUF file as their fields, for `model.quantize: gguf`.

`GGUFBlocks` holds one tensor's raw blocks (rows of bytes, llama.cpp's row permutation of q/k
already undone) and its type; `fields()` splits the bytes into codes and scales with the
format's published layout (ggml's block structs), `dequantized()` gives the float32 tensor as a
normal load does. Only the types `jaxcult.models.gguf_formats` keeps quantised are held so;
every other tensor is dequantised as it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_k": 144, "q5_k": 176, "q6_k": 210}


@dataclass(frozen=True)
class GGUFBlocks:
    """A weight [rows, row_length] as GGUF blocks; `transposed` marks the (in, out) view a
    projection kernel takes (blocks stay along each row: the kernel's `in`)."""

    kind: str                 # a key of jaxcult.models.gguf_formats.FORMATS
    raw: np.ndarray           # [rows, bytes per row] uint8
    row_length: int
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        rows = self.raw.shape[0]
        return (self.row_length, rows) if self.transposed else (rows, self.row_length)

    @property
    def T(self) -> GGUFBlocks:  # noqa: N802  (numpy's spelling, as convert_tensors uses it)
        return GGUFBlocks(self.kind, self.raw, self.row_length, not self.transposed)

    def dequantized(self) -> np.ndarray:
        """The float32 tensor (in this view's orientation), as the `gguf` package reads it."""
        import gguf

        values = gguf.quants.dequantize(self.raw, gguf.GGMLQuantizationType[self.kind.upper()])
        values = np.asarray(values, np.float32).reshape(self.raw.shape[0], self.row_length)
        return values.T if self.transposed else values

    def fields(self) -> dict[str, np.ndarray]:
        """Codes `q` [rows, row_length] and scales [rows, blocks] (see gguf_formats)."""
        rows = self.raw.shape[0]
        blocks = self.raw.reshape(rows, -1, BLOCK_BYTES[self.kind])
        fields = _UNPACK[self.kind](blocks)
        fields["q"] = fields["q"].reshape(rows, self.row_length)
        return {name: value.reshape(rows, -1) if name != "q" else value
                for name, value in fields.items()}


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16)[..., 0]


def _nibbles(raw: np.ndarray, group: int) -> np.ndarray:
    """Bytes in groups of `group`: each group's low nibbles, then its high nibbles."""
    shaped = raw.reshape(*raw.shape[:-1], -1, 1, group) >> np.array([0, 4], np.uint8)[:, None]
    return (shaped & np.uint8(15)).reshape(*raw.shape[:-1], -1)


def _q8_0(blocks: np.ndarray) -> dict[str, np.ndarray]:
    return {"d": _f16(blocks[..., 0:2]), "q": blocks[..., 2:].view(np.int8)}


def _q4_0(blocks: np.ndarray) -> dict[str, np.ndarray]:
    return {"d": _f16(blocks[..., 0:2]), "q": _nibbles(blocks[..., 2:], 16)}


def _scales_and_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K-quants' 8 six-bit scales and mins from 12 bytes: bytes 0-3 hold scales 0-3 (low 6
    bits) and the top 2 bits of scales 4-7; bytes 4-7 the same for the mins; bytes 8-11 the
    low 4 bits of scales 4-7 (low nibble) and of mins 4-7 (high nibble)."""
    first, second, rest = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate([first & 63, (rest & 15) | ((first >> 2) & 48)], axis=-1)
    mins = np.concatenate([second & 63, (rest >> 4) | ((second >> 2) & 48)], axis=-1)
    return scales, mins


def _q4_k(blocks: np.ndarray) -> dict[str, np.ndarray]:
    sc, m = _scales_and_mins(blocks[..., 4:16])
    return {"d": _f16(blocks[..., 0:2]), "dmin": _f16(blocks[..., 2:4]), "sc": sc, "m": m,
            "q": _nibbles(blocks[..., 16:], 32)}


def _q5_k(blocks: np.ndarray) -> dict[str, np.ndarray]:
    sc, m = _scales_and_mins(blocks[..., 4:16])
    high = blocks[..., 16:48]   # bit j of byte b: the fifth bit of weight 32 j + b
    fifth = (high[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & np.uint8(1)
    low = _nibbles(blocks[..., 48:], 32)
    return {"d": _f16(blocks[..., 0:2]), "dmin": _f16(blocks[..., 2:4]), "sc": sc, "m": m,
            "q": low | (fifth.reshape(low.shape) << np.uint8(4))}


def _q6_k(blocks: np.ndarray) -> dict[str, np.ndarray]:
    low = _nibbles(blocks[..., 0:128], 64)
    high = blocks[..., 128:192].reshape(*blocks.shape[:-1], 2, 1, 32)
    high = (high >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & np.uint8(3)
    return {"d": _f16(blocks[..., 208:210]), "sc": blocks[..., 192:208].view(np.int8),
            "q": low | (high.reshape(low.shape) << np.uint8(4))}


_UNPACK = {"q8_0": _q8_0, "q4_0": _q4_0, "q4_k": _q4_k, "q5_k": _q5_k, "q6_k": _q6_k}
