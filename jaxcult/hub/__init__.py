"""Checkpoint import/export: HF safetensors directories, E5S1 weights, offline assets."""

from jaxcult.hub.pretrained import load_pretrained

__all__ = ["load_pretrained"]
