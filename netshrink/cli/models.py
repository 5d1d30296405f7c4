"""``netshrink models``: the model zoo, with each model's size on both built-in data sets."""

from __future__ import annotations

import argparse

from netshrink.cli.args import add_command


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink models`` (``run_models`` does the work)."""
    add_command(commands, "models", "list the model zoo", run_models)


def run_models(args: argparse.Namespace) -> int:
    from netshrink.measure import count_parameters
    from netshrink.models import create_for_data, list_models

    for name in list_models():
        sizes = [count_parameters(create_for_data(name, shape, 10)) for shape in ((1, 28, 28), (1, 8, 8))]
        print(f"{name:<14} {sizes[0]:>9,} parameters on 1x28x28 inputs (fashion-mnist), "
              f"{sizes[1]:>9,} on 1x8x8 (digits)")
    return 0
