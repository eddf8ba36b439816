"""GGUF (llama.cpp) checkpoints of Llama-family models: metadata -> config, tensors -> HF names.

Tensors are dequantised with the `gguf` package (numpy). llama.cpp stores the rows of attn_q and
attn_k permuted for its rotary layout (pairs interleaved); they are permuted back so the weights
work with Hugging Face's rotate-half convention used by `jaxcult.models.decoder`. The tokenizer
and chat template come from the file's metadata through transformers' GGUF tokenizer converter.

Dequantising and converting the tokenizer take seconds each; a process that loads the same file
again (a pipeline training one adapter per culture, then exporting each) reuses the last file's
results: the tensors read-only, the tokenizer as a copy. The key includes the file's size and
modification time, so a changed file is read again.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import numpy as np

from jaxcult import models
from jaxcult.errors import UserError
from jaxcult.hub.gguf_blocks import GGUFBlocks
from jaxcult.models.quantized import GGUF_KINDS

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def _gguf_architectures() -> dict[str, models.Architecture]:
    """GGUF `general.architecture` value -> the registered family that reads it."""
    return {gguf_arch: arch for _, arch in models.ARCHITECTURES
            for gguf_arch in arch.gguf_architectures}


def _patterns(architecture: models.Architecture) -> list[tuple[re.Pattern, str]]:
    return [(re.compile("^" + re.escape(g).replace(r"\{i\}", r"(?P<i>\d+)") + "$"), h)
            for g, h in architecture.gguf_names]


def hf_name(gguf_name: str, patterns: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in patterns:
        match = pattern.match(gguf_name)
        if match:
            return template.format(**match.groupdict())
    return None


def unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation: per head, interleaved pairs back to two halves."""
    rows = weight.shape[0]
    shaped = weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
    return shaped.swapaxes(1, 2).reshape(weight.shape)


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's permutation (the inverse of `unpermute_rows`); used when writing GGUF."""
    rows = weight.shape[0]
    shaped = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return shaped.swapaxes(1, 2).reshape(weight.shape)


def _field(reader, key: str, path: Path, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is not None:
            return default
        raise UserError(f"{path}: GGUF metadata lacks {key!r}")
    return field.contents()


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def read_gguf(path: Path, keep_blocks: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """(HF config dict, HF-named float32 tensors, read-only) of a Llama-family GGUF file; with
    `keep_blocks`, the weights in a type jaxcult keeps quantised are `GGUFBlocks` instead."""
    config, tensors = _read_gguf_cached(_file_key(path), keep_blocks)
    return dict(config), dict(tensors)


@functools.lru_cache(maxsize=1)
def _read_gguf_cached(key: tuple[str, int, int], keep_blocks: bool
                      ) -> tuple[dict, dict[str, np.ndarray]]:
    config, tensors = _read_gguf(Path(key[0]), keep_blocks)
    for values in tensors.values():
        (values.raw if isinstance(values, GGUFBlocks) else values).flags.writeable = False
    return config, tensors


def _read_gguf(path: Path, keep_blocks: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError/struct errors on broken files
        raise UserError(f"{path}: unreadable GGUF file ({err})") from None
    arch = _field(reader, "general.architecture", path)
    families = _gguf_architectures()
    if arch not in families:
        raise UserError(f"{path}: GGUF architecture {arch!r} is not supported "
                        f"(supported: {', '.join(sorted(families))})")
    family = families[arch]
    patterns = _patterns(family)
    heads = int(_field(reader, f"{arch}.attention.head_count", path))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", path, heads))
    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise UserError(f"{path}: tensor {tensor.name!r} uses quantization {kind}, which "
                            f"jaxcult does not read (supported: {', '.join(SUPPORTED_TYPES)})")
        name = hf_name(tensor.name, patterns)
        if name is None:
            raise UserError(f"{path}: unexpected GGUF tensor {tensor.name!r}")
        shape = tuple(int(d) for d in reversed(tensor.shape))
        if keep_blocks and kind.lower() in GGUF_KINDS and len(shape) == 2:
            raw = np.asarray(tensor.data, np.uint8).reshape(shape[0], -1)
            tensors[name] = GGUFBlocks(kind.lower(), _unpermuted(raw, name, arch, family, heads,
                                                                 kv_heads), shape[1])
            continue
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = _unpermuted(np.asarray(values, dtype=np.float32).reshape(shape), name, arch,
                             family, heads, kv_heads)
        if family.gguf_norm_offset and name.endswith("norm.weight"):
            values = values - np.float32(family.gguf_norm_offset)
        tensors[name] = values
    return _config(reader, path, arch, family, tensors, heads, kv_heads), tensors


def _unpermuted(rows: np.ndarray, name: str, arch: str, family: models.Architecture, heads: int,
                kv_heads: int) -> np.ndarray:
    """q/k rows (floats or a row's blocks) back in Hugging Face's order."""
    if arch in family.gguf_permuted and ".self_attn.q_proj." in name:
        return unpermute_rows(rows, heads)
    if arch in family.gguf_permuted and ".self_attn.k_proj." in name:
        return unpermute_rows(rows, kv_heads)
    return rows


def _config(reader, path: Path, arch: str, family: models.Architecture,
            tensors: dict[str, np.ndarray], heads: int, kv_heads: int) -> dict:
    """The config.json fields the GGUF metadata and tensors give."""
    vocab = len(_field(reader, "tokenizer.ggml.tokens", path, [])) or tensors[
        "model.embed_tokens.weight"].shape[0]
    hidden = int(_field(reader, f"{arch}.embedding_length", path))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", path, hidden // heads))
    rotary = int(_field(reader, f"{arch}.rope.dimension_count", path, head_dim))
    config = {
        "model_type": family.gguf_architectures[arch], "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length", path)),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count", path)),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "partial_rotary_factor": rotary / head_dim,
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", path, 4096)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "use_qk_norm": any(".self_attn.q_norm." in name for name in tensors),
    }
    for key, hf_key in (("rope.freq_base", "rope_theta"),
                        ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
                        ("attention.layer_norm_epsilon", "layer_norm_eps"),
                        *family.gguf_fields.items()):
        if f"{arch}.{key}" in reader.fields:
            config[hf_key] = _field(reader, f"{arch}.{key}", path)
    if "rms_norm_eps" not in config and "layer_norm_eps" not in config:
        raise UserError(f"{path}: GGUF metadata lacks {arch}.attention.layer_norm_rms_epsilon")
    scaling = _field(reader, f"{arch}.rope.scaling.type", path, "none")
    if scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear",
                                  "factor": float(_field(reader, f"{arch}.rope.scaling.factor",
                                                         path))}
    if arch == "qwen2":
        config["attention_bias"] = True
    return config


def gguf_tokenizer(path: Path):
    """The tokenizer (with chat template) described by the GGUF metadata; None if it has none."""
    return copy.deepcopy(_gguf_tokenizer_cached(_file_key(path)))


@functools.lru_cache(maxsize=1)
def _gguf_tokenizer_cached(key: tuple[str, int, int]):
    import gguf

    path = Path(key[0])
    from transformers import AutoTokenizer

    if "tokenizer.ggml.model" not in gguf.GGUFReader(str(path)).fields:
        return None

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as err:  # converter errors name the unsupported tokenizer type
        raise UserError(f"{path}: cannot build a tokenizer from the GGUF metadata ({err})") from None
