"""Model code: encoders, decoders, heads, and the registry of architecture families.

Every parameter carries logical axis names. Importing this package registers the built-in
families (`bert_family`, `llama_family`, `gemma_family`, `qwen3_family`, `cohere_family`,
`phi3_family`).
"""

from __future__ import annotations

from jaxcult.models import bert_family as _bert_family  # noqa: F401  (registers)
from jaxcult.models import cohere_family as _cohere_family  # noqa: F401  (registers)
from jaxcult.models import gemma_family as _gemma_family  # noqa: F401  (registers)
from jaxcult.models import llama_family as _llama_family  # noqa: F401  (registers)
from jaxcult.models import phi3_family as _phi3_family  # noqa: F401  (registers)
from jaxcult.models import qwen3_family as _qwen3_family  # noqa: F401  (registers)
from jaxcult.models.decoder import DECODER_TYPES, CausalLM
from jaxcult.models.decoder_config import DecoderConfig
from jaxcult.models.encoder import ENCODER_TYPES, Encoder, EncoderConfig
from jaxcult.models.registry import (
    ARCHITECTURES,
    Architecture,
    architecture_for,
    architecture_of,
    build,
    config_from_hf,
    known_model_types,
    register_architecture,
)

__all__ = [
    "ARCHITECTURES", "Architecture", "CausalLM", "DECODER_TYPES", "DecoderConfig", "ENCODER_TYPES",
    "Encoder", "EncoderConfig", "architecture_for", "architecture_of", "build", "config_from_hf",
    "known_model_types", "register_architecture",
]
