"""The generation models a recipe's stages load, each once per (model, adapter)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class LoadedModels:
    """(model, tokenizer) by asset name or folder, a PEFT adapter attached when given; models
    passed in (tests) are used as they are."""

    def __init__(self, recipe: str, models: dict[str, tuple[Any, Any]] | None = None) -> None:
        self.recipe = recipe
        self.models: dict[str, tuple[Any, Any]] = dict(models or {})

    @staticmethod
    def key(name: str, adapter: Path | None) -> str:
        return f"{name}+{adapter}" if adapter else name

    def get(self, name: str, adapter: Path | None = None) -> tuple[Any, Any]:
        key = self.key(name, adapter)
        if key not in self.models:
            from jaxcult.run.generate import load_generation_model

            log.info(f"{self.recipe}: loading {key}")
            self.models[key] = load_generation_model(name, str(adapter) if adapter else None,
                                                     merge=False)
        return self.models[key]

    def forget(self, name: str, adapter: Path | None = None) -> None:
        """Drop a model no stage needs again (an adapter's own copy of the base)."""
        self.models.pop(self.key(name, adapter), None)
