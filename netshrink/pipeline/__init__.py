"""Recipes: one TOML file chains the compression families (prune, distill, quantize, architecture,
dynamic) over a model and its data; ``run_recipe`` runs, measures, resumes and reports them."""

from netshrink.pipeline.recipe import Recipe, RecipeError, Stage, load_recipe, parse_recipe
from netshrink.pipeline.run import run_recipe
from netshrink.pipeline.verbs import VERBS

__all__ = ["VERBS", "Recipe", "RecipeError", "Stage", "load_recipe", "parse_recipe", "run_recipe"]
