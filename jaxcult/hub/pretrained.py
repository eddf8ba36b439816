"""`load_pretrained(source)` and `load_tokenizer(source)`: one entry point each for asset names,
HF directories, weight files and Hugging Face Hub ids."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcult import assets, models
from jaxcult.errors import UserError
from jaxcult.hub.hf_dir import SafetensorsCheckpoint, read_config
from jaxcult.hub.hf_dir import load_tokenizer as load_dir_tokenizer
from jaxcult.hub.known_configs import known_config
from jaxcult.hub.loading import load_tensors
from jaxcult.models.quantize import Quantization
from jaxcult.sharding import Rules


def _xlmr_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model",
                    "*.model", "merges.txt", "vocab.json", "config.json"]
_HUB_FILES = [*_TOKENIZER_FILES, "*.safetensors", "*.safetensors.index.json",
              "generation_config.json"]


def _download(name: str, patterns: list[str]) -> Path:
    """A Hugging Face Hub model id -> its local snapshot of the files matching `patterns`."""
    if not _HUB_ID.match(name):
        raise UserError(f"model {name!r} is neither a known asset ({', '.join(assets.ASSETS)}), "
                        f"an existing path, nor a Hugging Face Hub id")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=patterns))
    except Exception as error:  # offline, unknown repo, gated repo: one clear line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"model {name!r} is neither a known asset ({', '.join(assets.ASSETS)}) nor "
                        f"an existing path, and downloading it from the Hugging Face Hub failed "
                        f"({type(error).__name__}: {reason[:200]})") from None


def _resolve(source: str | Path, patterns: list[str]) -> tuple[Path, assets.Asset | None]:
    """(local path of the weights, the asset it came from if any)."""
    name = str(source)
    if name in assets.ASSETS:
        asset = assets.get_asset(name)
        if asset.kind not in ("encoder", "decoder"):
            raise UserError(f"asset {name!r} is a {asset.kind}, not a model")
        return asset.path("main"), asset
    path = Path(source).expanduser()
    return (path if path.exists() else _download(name, patterns)), None


def load_tokenizer(source: str | Path):
    """The tokenizer of a model source without reading its weights (None when it has none)."""
    path, asset = _resolve(source, _TOKENIZER_FILES)
    if asset is not None and "tokenizer" in asset.files:
        return _xlmr_tokenizer(asset.path("tokenizer"))
    if path.is_dir():
        return load_dir_tokenizer(path)
    if path.suffix == ".gguf":
        from jaxcult.hub.gguf_io import gguf_tokenizer

        return gguf_tokenizer(path)
    if path.suffix == ".bin":  # E5S1 files carry SentencePiece pieces, not a usable tokenizer
        return None
    raise UserError(f"{path}: unsupported weight file (expected an HF directory, a .gguf file or "
                    f"an E5S1 .bin)")


def model_side_file(source: str | Path, name: str) -> Path | None:
    """A file of a model's HF directory or Hub snapshot (e.g. generation_config.json), or None
    (none there, or the model is a GGUF/E5S1 file)."""
    path, _ = _resolve(source, _HUB_FILES)
    return path / name if path.is_dir() and (path / name).is_file() else None


def load_model(source: str | Path, *, dtype: str | None = None, mesh: Mesh | None = None,
               rules: Rules | None = None, **overrides: Any) -> nnx.Module:
    """The model of a source, every tensor placed directly with its sharding when `mesh` is set;
    `dtype` is the parameter dtype (the `param_dtype` override)."""
    if dtype is not None:
        overrides.setdefault("param_dtype", dtype)
    return load_backbone(source, mesh=mesh, rules=rules, **overrides)[0]


def abstract_backbone(source: str | Path, *, checked: Collection[str] = (),
                      dropout: float | None = None, **overrides: Any) -> nnx.Module | None:
    """The model of a source as shapes only, from its config.json alone (no weight file read
    or needed: planning at full size): an HF directory's, else the built-in table's entry for
    a Hub id (`jaxcult.hub.known_configs`), else a downloaded snapshot's; None for other
    sources (a GGUF or E5S1 file, an asset)."""
    from jaxcult.hub.loading import abstract_module

    name = str(source)
    hf_config = None if Path(source).expanduser().exists() else known_config(name)
    if hf_config is None:
        path, _ = _resolve(source, _HUB_FILES)
        if not path.is_dir():
            return None
        hf_config = read_config(path)
    return abstract_module(models.config_from_hf(hf_config, name, checked, dropout, **overrides))


def load_backbone(source: str | Path, *, mesh: Mesh | None = None,
                  rules: Rules | None = None, checked: Collection[str] = (),
                  dropout: float | None = None, quantization: Quantization | None = None,
                  **overrides: Any) -> tuple[nnx.Module, Mapping[str, np.ndarray]]:
    """(the model of a source, the checkpoint's tensors it left to a task model's head, e.g.
    BERT's `cls.predictions.*`, read lazily by their checkpoint names). The `checked`
    overrides (the user's `model.overrides`) must be settings of the source's architecture;
    `dropout` sets each dropout rate the architecture has; `quantization` quantises the
    projections it selects as they load. The architecture's `dtype` (compute) and
    `param_dtype` are overrides like any other setting."""
    path, _ = _resolve(source, _HUB_FILES)
    name = str(source)
    gguf_blocks = quantization is not None and quantization.kind == "gguf"
    if gguf_blocks and path.suffix != ".gguf":
        raise UserError(f"model.quantize: gguf keeps a GGUF file's own quantised blocks, but "
                        f"{name} is not a .gguf file (use nf4 or int8)")
    if path.is_dir():
        hf_config = read_config(path)
        config = models.config_from_hf(hf_config, name, checked, dropout, **overrides)
        tensors = SafetensorsCheckpoint(path)
        if getattr(config, "add_pooler", False) and "add_pooler" not in overrides and not any(
                k.endswith("pooler.dense.weight") for k in tensors):   # e.g. *ForMaskedLM
            config = models.config_from_hf(hf_config, name, dropout=dropout, add_pooler=False,
                                           **overrides)
        return load_tensors(config, tensors, name, mesh=mesh, rules=rules, quantization=quantization)
    if path.suffix == ".gguf":
        from jaxcult.hub.gguf_io import read_gguf

        hf_config, tensors = read_gguf(path, keep_blocks=gguf_blocks)
    elif path.suffix == ".bin":
        from jaxcult.hub.e5s1 import read_e5s1

        hf_config, tensors = read_e5s1(path)
    else:
        raise UserError(f"{path}: unsupported weight file (expected an HF directory, a .gguf file "
                        f"or an E5S1 .bin)")
    config = models.config_from_hf(hf_config, name, checked, dropout, **overrides)
    return load_tensors(config, tensors, name, mesh=mesh, rules=rules, quantization=quantization)


def load_pretrained(source: str | Path, *, dtype: str | None = None, mesh: Mesh | None = None,
                    rules: Rules | None = None, **overrides: Any) -> tuple[nnx.Module, Any]:
    """Load `(model, tokenizer)` from an asset name, an HF directory, a `.gguf`, an E5S1 `.bin`,
    or a Hugging Face Hub id (downloaded once into the Hub cache).

    `dtype` sets the parameter dtype (default float32); with `mesh`, every tensor is placed
    directly with the sharding its logical axes get under `rules`. `overrides` replace
    architecture fields (e.g. `hidden_dropout_prob=0.0`).
    """
    model = load_model(source, dtype=dtype, mesh=mesh, rules=rules, **overrides)
    return model, load_tokenizer(source)
