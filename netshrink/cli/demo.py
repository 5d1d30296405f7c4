"""``netshrink demo``: the tour of every compression family (``netshrink.demo``) from the command line."""

from __future__ import annotations

import argparse

from netshrink.cli.args import TRAINING, add_command, data_args, fit_args, fit_config, out_args, out_folder


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink demo`` (``run_demo`` does the work)."""
    add_command(commands, "demo", "the main job on the embedded default: a tour through every compression family "
                "on LeNet-300-100, one table, an HTML report (writes OUT/model.nsk, OUT/report.html); the baseline "
                "is the kept Fashion-MNIST one, or trained for --epochs on other data", run_demo,
                parents=[data_args(split=False), fit_args(TRAINING, "training epochs of the baseline when the kept "
                                                          "one is not used", only=("epochs",)),
                         out_args("model.nsk, report.json, report.html and each stage's work", default="runs/demo")])


def run_demo(args: argparse.Namespace) -> int:
    from netshrink.demo import run_demo as tour

    fit_config(args)  # checks --epochs
    return tour(out_folder(args), data=args.data, data_dir=args.data_dir, epochs=args.epochs)
