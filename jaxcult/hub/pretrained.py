"""`load_pretrained(source)`: one entry point for asset names, HF directories and weight files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flax import nnx
from jax.sharding import Mesh

from jaxcult import models
from jaxcult.errors import UserError
from jaxcult.hub import assets
from jaxcult.hub.hf_dir import SafetensorsCheckpoint, load_tokenizer, read_config
from jaxcult.hub.loading import load_tensors
from jaxcult.sharding import Rules


def _architecture(hf_config: dict, source: str, overrides: dict) -> models.ModelConfig:
    try:
        return models.config_from_hf(hf_config, **overrides)
    except KeyError:
        known = ", ".join((*models.ENCODER_TYPES, *models.DECODER_TYPES))
        raise UserError(f"{source}: unsupported model_type {hf_config.get('model_type')!r} "
                        f"(supported: {known})") from None


def _xlmr_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*",
              "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model", "*.model",
              "merges.txt", "vocab.json"]


def _download(name: str) -> Path:
    """A Hugging Face Hub model id -> its local snapshot (safetensors, config, tokenizer)."""
    if not _HUB_ID.match(name):
        raise UserError(f"model {name!r} is neither a known asset ({', '.join(assets.ASSETS)}), "
                        f"an existing path, nor a Hugging Face Hub id")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=_HUB_FILES))
    except Exception as error:  # offline, unknown repo, gated repo: one clear line
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"model {name!r} is neither a known asset ({', '.join(assets.ASSETS)}) nor "
                        f"an existing path, and downloading it from the Hugging Face Hub failed "
                        f"({type(error).__name__}: {reason[:200]})") from None


def load_pretrained(source: str | Path, *, dtype: str | None = None, mesh: Mesh | None = None,
                    rules: Rules | None = None, **overrides: Any) -> tuple[nnx.Module, Any]:
    """Load `(model, tokenizer)` from an asset name, an HF directory, a `.gguf`, an E5S1 `.bin`,
    or a Hugging Face Hub id (downloaded once into the Hub cache).

    `dtype` sets the parameter dtype (default float32); with `mesh`, every tensor is placed
    directly with the sharding its logical axes get under `rules`. `overrides` replace
    architecture fields (e.g. `hidden_dropout_prob=0.0`).
    """
    if dtype is not None:
        overrides.setdefault("param_dtype", dtype)
    kw = dict(mesh=mesh, rules=rules)
    name = str(source)
    if name in assets.ASSETS:
        asset = assets.get_asset(name)
        if asset.kind not in ("encoder", "decoder"):
            raise UserError(f"asset {name!r} is a {asset.kind}, not a model")
        main = asset.path("main")
        model, tokenizer = load_pretrained(main, dtype=dtype, **kw, **overrides)
        if "tokenizer" in asset.files:
            tokenizer = _xlmr_tokenizer(asset.path("tokenizer"))
        return model, tokenizer
    path = Path(source).expanduser()
    if not path.exists():
        path = _download(name)
    if path.is_dir():
        hf_config = read_config(path)
        config = _architecture(hf_config, name, overrides)
        model = load_tensors(config, SafetensorsCheckpoint(path), name, **kw)
        return model, load_tokenizer(path)
    if path.suffix == ".gguf":
        from jaxcult.hub.gguf_io import gguf_tokenizer, read_gguf

        hf_config, tensors = read_gguf(path)
        config = _architecture(hf_config, name, overrides)
        return load_tensors(config, tensors, name, **kw), gguf_tokenizer(path)
    if path.suffix == ".bin":
        from jaxcult.hub.e5s1 import read_e5s1

        hf_config, tensors = read_e5s1(path)
        config = _architecture(hf_config, name, overrides)
        return load_tensors(config, tensors, name, **kw), None
    raise UserError(f"{path}: unsupported weight file (expected an HF directory, a .gguf file or "
                    f"an E5S1 .bin)")
