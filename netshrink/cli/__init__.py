"""The ``netshrink`` command.

Each command is a module here (or one module for two close commands) with an
``add_<command>_parser(commands)`` that declares its options and a ``run_<command>(args)`` that
does the work, listed in ``PARSER_ADDERS``; adding a command is adding one such pair. The option
groups several commands share (data, training, output, ``--debug``) are parent parsers in
``args.py``, one definition each. Handlers import what they need, so ``netshrink --help`` does not
import torch. Bad input ends with one line on stderr and exit status 2 (``--debug``, before or after
the command, shows the traceback). No other netshrink package imports this one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from netshrink.cli.args import DEBUG_HELP
from netshrink.cli.auto import add_auto_parser
from netshrink.cli.convert import add_convert_parser
from netshrink.cli.demo import add_demo_parser
from netshrink.cli.distill import add_distill_parser
from netshrink.cli.dynamic import add_dynamic_parser
from netshrink.cli.evaluate import add_eval_parser, add_inspect_parser
from netshrink.cli.export import add_export_parser
from netshrink.cli.help_format import HelpFormatter
from netshrink.cli.models import add_models_parser
from netshrink.cli.prune import add_prune_parser
from netshrink.cli.quantize import add_quantize_parser
from netshrink.cli.recipe import add_run_parser
from netshrink.cli.train import add_train_parser

__all__ = ["DESCRIPTION", "EPILOG", "PARSER_ADDERS", "build_parser", "main"]

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1

DESCRIPTION = ("Compress trained PyTorch models into small files that load back into runnable models, "
               "with every size, speed and accuracy measured.")
EPILOG = """examples:
  netshrink models
  netshrink train --model lenet5 --data digits --epochs 5 --out runs/lenet5
  netshrink eval runs/lenet5/model.safetensors --data digits
  netshrink prune runs/lenet5/model.safetensors --data digits --sparsity 0.9 --epochs 2 --out runs/pruned
  netshrink demo                                  # writes runs/demo/model.nsk
  netshrink inspect runs/demo/model.nsk
  netshrink run recipes/deep_compression_lenet300_100.toml --out runs/dc300
  netshrink auto runs/lenet5/model.safetensors --data digits --max-bytes 20x --max-drop 1 --time 10m --out runs/auto

Every command spells a shared option the same way, with the same default where it means the same
(COMMAND --help lists them in groups: data, training, output). Bad input ends with one line on
stderr and exit status 2; --debug shows the traceback."""

#: one adder per command, in the order ``netshrink --help`` lists them
PARSER_ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_models_parser, add_train_parser, add_eval_parser, add_inspect_parser, add_demo_parser,
    add_distill_parser, add_prune_parser, add_quantize_parser, add_export_parser, add_convert_parser,
    add_dynamic_parser, add_run_parser, add_auto_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netshrink", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in PARSER_ADDERS:
        add_parser(commands)
    for command in commands.choices.values():
        for action in command._actions:  # an option declared without help still shows its default
            if action.help is None and action.option_strings and HelpFormatter.has_default(action):
                action.help = "(default: %(default)s)"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from netshrink.core.errors import NetshrinkError

    try:
        return args.func(args)
    except NetshrinkError as exc:
        if args.debug:
            raise
        print(f"netshrink: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("netshrink: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into one line
        if args.debug:
            raise
        print(f"netshrink: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a "
              "traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
