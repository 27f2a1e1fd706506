"""The fixed torchvision detector: recipe, data, training, prediction, out-of-fold predictions.

Importing this package does not import torch; the submodules do.
"""
from __future__ import annotations

from .recipe import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "get_recipe"]
