"""The ``netshrink`` command.

Each command is one ``add_<command>_parser(commands)`` that declares its options and one
``run_<command>(args)`` that does the work, listed in ``PARSER_ADDERS``; adding a command is
adding one such pair. Handlers import what they need, so ``netshrink --help`` stays fast. Bad
input ends with one line on stderr and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from netshrink.arch.cli import add_convert_parser
from netshrink.distill.cli import add_distill_parser
from netshrink.dynamic.cli import add_budget_args, add_dynamic_parser
from netshrink.prune.cli import add_prune_parser
from netshrink.quant.cli import add_export_parser, add_quantize_parser

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1

DESCRIPTION = ("Compress trained PyTorch models into small files that load back into runnable models, "
               "with every size, speed and accuracy measured.")
EPILOG = """examples:
  netshrink models
  netshrink train --model lenet5 --data digits --epochs 5 --out runs/lenet5
  netshrink eval runs/lenet5/model.safetensors --data digits
  netshrink demo                                  # writes runs/demo/model.nsk
  netshrink inspect runs/demo/model.nsk
  netshrink run recipes/deep_compression_lenet300_100.toml --out runs/dc300

Bad input ends with one line on stderr and exit status 2; --debug shows the traceback."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (left out where there is none: ``None`` or an
    off flag); descriptions and epilogs are wrapped by paragraph, and a paragraph of indented
    lines (examples) keeps its line breaks."""

    @staticmethod
    def has_default(action: argparse.Action) -> bool:
        """Whether help should show ``action``'s default: not for ``None`` or an off flag."""
        return action.default is not None and action.default is not False and action.default != argparse.SUPPRESS

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return super()._get_help_string(action) if self.has_default(action) else action.help

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)


def add_command(commands: argparse._SubParsersAction, name: str, help: str,
                run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A sub-command parser with netshrink's help formatter whose ``args.func`` is ``run``."""
    parser = commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    parser.set_defaults(func=run)
    return parser


def _add_data_args(parser: argparse.ArgumentParser, default: str | None = "fashion-mnist") -> None:
    parser.add_argument("--data", default=default,
                        help="fashion-mnist, digits, a .npz (x_train, y_train, x_test, y_test) or an "
                             "image folder with train/ and test/")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST IDX files (default: $NETSHRINK_DATA or "
                             "/usr/share/datasets/fashion-mnist)")


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    add_command(commands, "models", "list the model zoo", run_models)


def run_models(args: argparse.Namespace) -> int:
    from netshrink.measure import count_parameters
    from netshrink.models import create_for_data, list_models

    for name in list_models():
        sizes = [count_parameters(create_for_data(name, shape, 10)) for shape in ((1, 28, 28), (1, 8, 8))]
        print(f"{name:<14} {sizes[0]:>9,} parameters on 1x28x28 inputs (fashion-mnist), "
              f"{sizes[1]:>9,} on 1x8x8 (digits)")
    return 0


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "train", "train a zoo model (checkpoint every epoch, --resume after a kill)",
                    run_train)
    p.add_argument("--model", required=True, help="zoo name (see `netshrink models`)")
    p.add_argument("--model-kwargs", default=None, help='JSON of extra model kwargs, e.g. \'{"hidden": 128}\'')
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=10, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (split across DDP ranks)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"], help="optimizer")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                   help="learning-rate schedule, per step")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    p.add_argument("--augment", action="store_true", help="random crop and horizontal flip")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, batch order and split")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", required=True, help="run folder (checkpoint.safetensors, model.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from netshrink.core.errors import ConfigError
    from netshrink.data import load_dataset
    from netshrink.measure import evaluate
    from netshrink.models import create_for_data, list_models
    from netshrink.train import FitConfig, fit

    if args.model not in list_models():
        raise ConfigError(f"unknown model {args.model!r}; choose one of {list_models()}")
    data = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc}); e.g. '{{\"hidden\": 128}}'") from None
    if not isinstance(kwargs, dict):
        raise ConfigError("--model-kwargs must be a JSON object, e.g. '{\"hidden\": 128}'")
    import torch

    torch.manual_seed(args.seed)
    model = create_for_data(args.model, data.input_shape, data.num_classes, **kwargs)
    config = FitConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
                       schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                       label_smoothing=args.label_smoothing, augment=args.augment, seed=args.seed)
    result = fit(model, data, config, out_dir=args.out, resume=args.resume,
                 progress=not args.no_progress, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    test_acc = evaluate(result.model, data.test, device=args.device)
    val = f"{result.val_acc:.4f}" if result.val_acc is not None else "n/a (empty validation split)"
    print(f"val accuracy {val}  test accuracy {test_acc:.4f}  -> {Path(args.out) / 'model.safetensors'}")
    return 0


def _load_any_model(path: str):
    """A trained checkpoint/model (.safetensors) or a compressed .nsk file."""
    p = Path(path)
    if not p.is_file():
        from netshrink.core.errors import ConfigError

        raise ConfigError(f"{path} does not exist; give a .safetensors checkpoint or a .nsk file")
    if p.suffix == ".nsk":
        from netshrink.codec.container import load

        return load(p)
    from netshrink.train import load_model

    return load_model(p)


def _check_fits(model, data, source: str) -> None:
    """A one-line error, not a shape traceback, when the model was made for other data."""
    import torch

    from netshrink.core.errors import ConfigError

    try:
        with torch.no_grad():
            logits = model.eval()(data.test.x[:1])
    except RuntimeError:
        raise ConfigError(f"{source} does not accept {data.name} inputs of shape {tuple(data.input_shape)}; "
                          "evaluate it on the data it was trained for") from None
    if logits.shape[-1] < data.num_classes:
        raise ConfigError(f"{source} predicts {logits.shape[-1]} classes but {data.name} has "
                          f"{data.num_classes}; evaluate it on the data it was trained for")


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "eval", "accuracy, size, MACs and latency of a checkpoint or .nsk file", run_eval)
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    _add_data_args(p)
    p.add_argument("--threads", type=int, default=1, help="threads for latency")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_budget_args(p)


def run_eval(args: argparse.Namespace) -> int:
    from netshrink.data import load_dataset
    from netshrink.measure import format_layer_table, layer_table, measure_model
    from netshrink.measure.macs import counted_path
    from netshrink.measure.size import fp32_baseline

    model = _load_any_model(args.checkpoint)
    data = load_dataset(args.data, data_dir=args.data_dir)
    _check_fits(model, data, args.checkpoint)
    from netshrink.dynamic.cli import describe_measured, use_budget

    point = use_budget(model, args, data)
    report = measure_model(model, data.input_shape, data.test, threads=args.threads)
    report["file_bytes"] = Path(args.checkpoint).stat().st_size
    if point is not None:
        report["operating_point"] = point
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_layer_table(layer_table(model, data.input_shape)))
    lat = report["latency"]
    print(f"\ntest accuracy {report['accuracy']:.4f} | params {report['params']:,} "
          f"(nonzero {report['nonzero_params']:,}) | MACs {report['macs']:,}"
          f"{'' if counted_path(model) is None else f' ({counted_path(model)})'} | file "
          f"{fp32_baseline(model).versus(report['file_bytes'])}\n"
          f"latency ({args.threads} thread(s)): batch 1 {lat['batch_1']['median_ms']:.3f} ms, "
          f"batch 256 {lat['batch_256']['median_ms']:.2f} ms (median)")
    if point is not None:
        print(describe_measured(point))
    return 0


def add_inspect_parser(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "inspect", "per-layer table of a .nsk file (Deep Compression Table 2 form)",
                    run_inspect)
    p.add_argument("file", help="a .nsk file, e.g. runs/demo/model.nsk")


def run_inspect(args: argparse.Namespace) -> int:
    from netshrink.codec.inspect import inspect_report

    print(inspect_report(args.file))
    return 0


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "demo", "the main job on the embedded default: a tour through every compression "
                    "family on LeNet-300-100, one table, an HTML report (writes OUT/model.nsk, OUT/report.html)",
                    run_demo)
    _add_data_args(p)
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--epochs", type=int, default=8,
                   help="baseline training epochs (when the kept Fashion-MNIST baseline is not used)")


def run_demo(args: argparse.Namespace) -> int:
    from netshrink.demo import run_demo as demo

    return demo(args)


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "run", "run a TOML recipe of compression stages (see recipes/); writes OUT/model.nsk, "
                    "OUT/report.json and OUT/report.html, and resumes an interrupted run in OUT", run_run)
    p.add_argument("recipe", help="a .toml recipe, e.g. recipes/deep_compression_lenet300_100.toml")
    p.add_argument("--out", required=True, help="output folder (one recipe per folder)")
    p.add_argument("--check", action="store_true", help="only validate the recipe")


def run_run(args: argparse.Namespace) -> int:
    from netshrink.pipeline import load_recipe, run_recipe

    recipe = load_recipe(args.recipe)
    if args.check:
        print(f"{args.recipe}: valid ({len(recipe.stages)} stages)")
        return 0
    run_recipe(recipe, args.out)
    return 0


#: one adder per command, in the order ``netshrink --help`` lists them
PARSER_ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_models_parser, add_train_parser, add_eval_parser, add_inspect_parser, add_demo_parser,
    add_distill_parser, add_prune_parser, add_quantize_parser, add_export_parser, add_convert_parser,
    add_dynamic_parser, add_run_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netshrink", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
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


if __name__ == "__main__":
    sys.exit(main())
