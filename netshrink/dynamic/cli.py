"""``netshrink dynamic``: add early exits or slimmable widths to a checkpoint, train, profile, save.

    netshrink dynamic CHECKPOINT --exits B1,B2 | --widths 0.25,0.5,0.75,1 --epochs N --out DIR

and the budget options of ``netshrink eval`` (``--budget-macs X | --budget-ms X | --threshold t``).
Every value is checked before any training; the only file written is ``DIR/model.nsk``, atomically,
at the end, with the profile table (accuracy, MACs, latency per operating point) inside.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

OUTPUT_NAME = "model.nsk"


def add_dynamic_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink dynamic`` and its options (``run_dynamic`` does the work)."""
    from netshrink.cli import _add_data_args, add_command
    from netshrink.dynamic.early_exit import HEADS

    p = add_command(commands, "dynamic", "add early exits (BranchyNet) or slimmable widths (Yu et al. 2019) to a "
                    "checkpoint, train them jointly, profile every operating point and write a .nsk", run_dynamic)
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    _add_data_args(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--exits", help="comma-separated blocks to add an exit after, e.g. features.2,features.5")
    what.add_argument("--widths", help="comma-separated widths in (0, 1] including 1, e.g. 0.25,0.5,0.75,1")
    p.add_argument("--epochs", type=int, required=True, metavar="N", help="joint training epochs")
    p.add_argument("--head", choices=list(HEADS), default="linear", help="exit head (--exits)")
    p.add_argument("--pool", type=int, default=4, help="pooled grid side of exit heads on conv features")
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight of distilling each exit from the last (--exits), in [0, 1]")
    p.add_argument("--max-drop", type=float, default=0.005,
                   help="calibrate exit thresholds on val for at most this accuracy drop (fraction)")
    p.add_argument("--lr", type=float, default=0.02, help="learning rate (cosine decay)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=f"output folder; receives {OUTPUT_NAME}")


def _listed(text: str, option: str) -> list[str]:
    from netshrink.core.errors import ConfigError

    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ConfigError(f"{option} takes a comma-separated list without empty items, got {text!r}")
    return items


def _widths(text: str) -> tuple[float, ...]:
    from netshrink.core.errors import ConfigError
    from netshrink.dynamic.slimmable import Slimmable

    try:
        values = tuple(float(v) for v in _listed(text, "--widths"))
    except ValueError:
        raise ConfigError(f"--widths takes numbers in (0, 1], got {text!r}") from None
    return Slimmable(widths=values).widths


def run_dynamic(args: argparse.Namespace) -> int:
    from netshrink.cli import _check_fits, _load_any_model
    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.core.errors import ConfigError
    from netshrink.data import load_dataset
    from netshrink.dynamic import (
        EarlyExit,
        Profile,
        Slimmable,
        calibrate_thresholds,
        describe,
        early_exit_,
        exit_loss,
        profile_,
        profile_table,
        sandwich_loss,
        set_width,
        slimmable_,
    )
    from netshrink.train import FitConfig, fit

    config = FitConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    if not 0.0 <= args.distill <= 1.0 or not 0.0 <= args.max_drop <= 1.0:
        raise ConfigError(f"--distill and --max-drop must be in [0, 1], got {args.distill} and {args.max_drop}")
    widths = _widths(args.widths) if args.widths else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    model = _load_any_model(args.checkpoint)
    data = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    _check_fits(model, data, args.checkpoint)
    finalize_(model)
    model.train()
    if widths is not None:
        slimmable_(model, Slimmable(widths=widths))
        set_width(model, 1.0)
        fit(model, data, config, loss_fn=sandwich_loss(model), progress=False)
        points = profile_table(profile_(model, Profile(val=data.val, input_shape=data.input_shape)))["points"]
    else:
        early_exit_(model, EarlyExit(after=tuple(_listed(args.exits, "--exits")), head=args.head, pool=args.pool,
                                     input_shape=tuple(data.input_shape)))
        fit(model, data, config, loss_fn=exit_loss(model, distill=args.distill), progress=False)
        chosen = calibrate_thresholds(model, data.val, max_drop=args.max_drop, input_shape=data.input_shape)
        points = profile_table(profile_(model, Profile(val=data.val, thresholds=[chosen["threshold"]],
                                                        input_shape=data.input_shape)))["points"]
    path = out / OUTPUT_NAME
    save(model, path)
    print("operating points (validation split):")
    for point in points:
        print("  " + describe(point))
    print(f"wrote {path} ({path.stat().st_size:,} B); pick a point with netshrink eval {path} --budget-macs X")
    return 0


def add_budget_args(parser: argparse.ArgumentParser) -> None:
    """``eval``'s options choosing the operating point of a dynamic model."""
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-macs", type=float, default=None,
                        help="run the most accurate profiled point within this many MACs per sample")
    budget.add_argument("--budget-ms", type=float, default=None,
                        help="run the most accurate profiled point within this latency per sample (ms)")
    budget.add_argument("--threshold", type=float, default=None,
                        help="early exits: leave at the first exit whose confidence exceeds t in [0, 1]")


def use_budget(model: Any, args: argparse.Namespace, data: Any) -> dict[str, Any] | None:
    """Switch ``model`` to the point ``eval``'s budget options ask for and measure it on the test
    split (accuracy, and latency per sample at batch 1 on real inputs); None when none is asked."""
    from netshrink.dynamic.early_exit import check_threshold, set_thresholds
    from netshrink.dynamic.profile import choose_point, latency_per_sample, use_point
    from netshrink.measure import evaluate

    if args.threshold is not None:
        point = {"kind": "threshold", "value": check_threshold(args.threshold, "--threshold")}
        set_thresholds(model, point["value"])
    elif args.budget_macs is not None or args.budget_ms is not None:
        point = dict(choose_point(model, budget_macs=args.budget_macs, budget_ms=args.budget_ms))
        use_point(model, point)
    else:
        return None
    point["test_accuracy"] = evaluate(model, data.test)
    point["test_latency_ms"] = latency_per_sample(model, data.test.x[:256], threads=args.threads)
    return point


def describe_measured(point: dict[str, Any]) -> str:
    """The chosen point, its profile (if any) and what ``eval`` measured now."""
    profiled = (f" (profiled: val accuracy {point['accuracy']:.4f}, {point['macs']:,.0f} MACs, "
                f"{point['latency_ms']:.3f} ms)") if "accuracy" in point else ""
    return (f"operating point {point['kind']} {point['value']:g}{profiled}: test accuracy "
            f"{point['test_accuracy']:.4f}, {point['test_latency_ms']:.3f} ms per sample (batch 1, test inputs)")
