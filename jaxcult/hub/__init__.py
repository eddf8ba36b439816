"""Everything that reads or writes foreign files: HF safetensors directories, GGUF, E5S1,
AdapterHub and PEFT adapters, MAD-X language adapters, tokenizers. Names per architecture come
from the model registry (`jaxcult.models`)."""

from jaxcult.hub.pretrained import load_model, load_pretrained, load_tokenizer

__all__ = ["load_model", "load_pretrained", "load_tokenizer"]
