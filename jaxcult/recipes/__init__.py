"""Recipes: multi-stage research pipelines, one folder each (config schema, stages, prompts),
run by one stage runner and each a `jaxcult` command (docs/architecture.md, "How to add a
recipe"). Importing this package registers the built-ins: `care`, `cckg`, `clca`, `narratives`,
`pairs`.
"""

from jaxcult.recipes import care as _care  # noqa: F401  (registers)
from jaxcult.recipes import cckg as _cckg  # noqa: F401  (registers)
from jaxcult.recipes import clca as _clca  # noqa: F401  (registers)
from jaxcult.recipes import narratives as _narratives  # noqa: F401  (registers)
from jaxcult.recipes import pairs as _pairs  # noqa: F401  (registers)
from jaxcult.recipes.base import RECIPES, Recipe, Stage, discover, register_recipe

__all__ = ["RECIPES", "Recipe", "Stage", "discover", "register_recipe"]
