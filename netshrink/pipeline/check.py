"""A recipe checked against its model before anything trains: every layer a stage names exists.

``parse_recipe`` checks what the recipe says on its own; the layer names in a stage's config
(``Config.layer_names``: ``layers``, per-layer ``bits`` or ``sparsity``, exit blocks) can only be
checked against the model as the stages before it leave it. So the structural stages are applied,
without training, to a copy of the model (a factorization renames ``fc1`` to ``fc1.reduce``), and
each stage's names are looked up in the copy as it stands then.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.registry import apply_
from netshrink.pipeline.recipe import Recipe, RecipeError


def check_against_model(recipe: Recipe, model: nn.Module, where: str = "recipe") -> None:
    """Raise ``RecipeError`` listing, one line each, every stage that names a layer the model does
    not have at that stage."""
    model = copy.deepcopy(model)
    problems: list[str] = []
    for index, stage in enumerate(recipe.stages):
        if stage.config is None:
            continue
        layers = dict(model.named_modules())
        unknown = [name for name in stage.config.layer_names() if not name or name not in layers]
        if unknown:
            shown = [name for name in layers if name][:12]
            problems.append(f"stages[{index}].config: no layer named {', '.join(map(repr, unknown))} in the model "
                            f"at this stage; its layers include {', '.join(shown)}")
        elif stage.technique.structural:
            try:
                apply_(model, stage.config)
            except ConfigError as error:
                problems.append(f"stages[{index}].config: {error}")
                break
    if problems:
        raise RecipeError(f"{where} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def check_recipe(recipe: Recipe, where: str = "recipe") -> Any:
    """Build the recipe's model for its data and check every stage's layer names against it;
    returns the data set (loaded for the model's input shape; None for a pretrained model, whose
    calibration text is read, tokenized and checked against its vocabulary here)."""
    if "pretrained" in recipe.model:
        from netshrink.data.text import check_vocabulary
        from netshrink.pipeline.run_pretrained import calibration_text, load_pretrained_model

        model, tokenizer = load_pretrained_model(recipe)
        check_vocabulary(calibration_text(recipe, tokenizer), model, f"{where}: data.text")
        check_against_model(recipe, model, where)
        return None
    from netshrink.data import load_dataset
    from netshrink.pipeline.run import build_model

    data = load_dataset(recipe.data["name"], data_dir=recipe.data.get("dir"),
                        val_fraction=recipe.data.get("val_fraction", 0.1))
    check_against_model(recipe, build_model(recipe, data), where)
    return data
