"""``netshrink eval`` and ``netshrink inspect``: what a checkpoint or .nsk file holds and does.

    netshrink eval FILE --data D [--threads N] [--json] [--budget-macs X | --budget-ms X | --threshold t]
    netshrink inspect FILE.nsk
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from netshrink.cli.args import add_command, data_args, load_data
from netshrink.cli.budget import budget_args, describe_measured, use_budget
from netshrink.cli.loading import check_fits, load_any_model


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink eval`` (``run_eval`` does the work)."""
    p = add_command(commands, "eval", "accuracy, size, MACs and latency of a checkpoint or .nsk file", run_eval,
                    parents=[data_args(split=False), budget_args()])
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--threads", type=int, default=1, help="threads for latency")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_eval(args: argparse.Namespace) -> int:
    from netshrink.measure import format_layer_table, layer_table, measure_model
    from netshrink.measure.macs import counted_path
    from netshrink.measure.size import fp32_baseline

    model = load_any_model(args.checkpoint)
    data = load_data(args)
    check_fits(model, data, args.checkpoint)
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
    """Declare ``netshrink inspect`` (``run_inspect`` does the work)."""
    p = add_command(commands, "inspect", "per-layer table of a .nsk file (Deep Compression Table 2 form)",
                    run_inspect)
    p.add_argument("file", help="a .nsk file, e.g. runs/demo/model.nsk")


def run_inspect(args: argparse.Namespace) -> int:
    from netshrink.codec.inspect import inspect_report

    print(inspect_report(args.file))
    return 0
