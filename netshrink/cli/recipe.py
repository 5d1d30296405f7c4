"""``netshrink run``: run a TOML recipe of compression stages (``netshrink.pipeline``).

    netshrink run RECIPE.toml --out DIR [--check]
"""

from __future__ import annotations

import argparse

from netshrink.cli.args import add_command, out_args


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink run`` (``run_run`` does the work)."""
    p = add_command(commands, "run", "run a TOML recipe of compression stages (see recipes/); writes OUT/model.nsk, "
                    "OUT/report.json and OUT/report.html, and resumes an interrupted run in OUT", run_run,
                    parents=[out_args("model.nsk, report.json, report.html and each stage's work (one recipe per "
                                      "folder)")])
    p.add_argument("recipe", help="a .toml recipe, e.g. recipes/deep_compression_lenet300_100.toml")
    p.add_argument("--check", action="store_true", help="only validate the recipe, its layer names against its model "
                                                         "included; run nothing")


def run_run(args: argparse.Namespace) -> int:
    from netshrink.pipeline import check_recipe, load_recipe, run_recipe

    recipe = load_recipe(args.recipe)
    if args.check:
        check_recipe(recipe, where=args.recipe)
        print(f"{args.recipe}: valid ({len(recipe.stages)} stages)")
        return 0
    run_recipe(recipe, args.out)
    return 0
