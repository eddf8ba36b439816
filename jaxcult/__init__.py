"""jaxcult: adapting pretrained transformers across languages and cultures, in JAX/Flax."""

from __future__ import annotations

__version__ = "0.1.0"


def load_pretrained(source, **kwargs):
    """`(model, tokenizer)` from an asset name, an HF directory or a weight file.

    Imported lazily so that `import jaxcult` (and the CLI's --help) stays fast.
    """
    from jaxcult.hub.pretrained import load_pretrained as _load

    return _load(source, **kwargs)


def generate(model, tokenizer, prompts, config=None, **kwargs):
    """Batched generation (see `jaxcult.generation.generate`), imported lazily."""
    from jaxcult.config import GenerationConfig
    from jaxcult.generation import generate as _generate

    return _generate(model, tokenizer, prompts, config or GenerationConfig(), **kwargs)
