"""Model code: encoders, decoders, heads. Every parameter carries logical axis names."""

from __future__ import annotations

from typing import Any

from flax import nnx

from jaxcult.models.decoder import DECODER_TYPES, CausalLM, DecoderConfig
from jaxcult.models.encoder import ENCODER_TYPES, Encoder, EncoderConfig

ModelConfig = EncoderConfig | DecoderConfig


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Typed architecture config from an HF `config.json` dict (KeyError on unknown model_type)."""
    model_type = hf.get("model_type")
    if model_type in ENCODER_TYPES:
        return EncoderConfig.from_hf(hf, **overrides)
    if model_type in DECODER_TYPES:
        return DecoderConfig.from_hf(hf, **overrides)
    raise KeyError(model_type)


def build(config: ModelConfig, seed: int = 0) -> nnx.Module:
    """A randomly initialised model of the given architecture."""
    cls = Encoder if isinstance(config, EncoderConfig) else CausalLM
    return cls(config, rngs=nnx.Rngs(seed))


__all__ = [
    "CausalLM", "DecoderConfig", "Encoder", "EncoderConfig", "ModelConfig", "build",
    "config_from_hf", "DECODER_TYPES", "ENCODER_TYPES",
]
