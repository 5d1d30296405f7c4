"""Recipes: one TOML file chains the compression families (prune, distill, quantize, architecture,
dynamic) over a model and its data; ``run_recipe`` runs, measures, resumes and reports them."""

from netshrink.pipeline.check import check_against_model, check_recipe
from netshrink.pipeline.recipe import Recipe, RecipeError, Stage, load_recipe, parse_recipe, stage_verbs
from netshrink.pipeline.run import run_recipe

__all__ = ["Recipe", "RecipeError", "Stage", "check_against_model", "check_recipe", "load_recipe", "parse_recipe",
           "run_recipe", "stage_verbs"]
