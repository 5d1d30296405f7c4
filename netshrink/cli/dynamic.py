"""``netshrink dynamic``: add early exits or slimmable widths to a checkpoint, train, profile, save.

    netshrink dynamic CHECKPOINT --exits B1,B2 | --widths 0.25,0.5,0.75,1 --epochs N --out DIR

Every value is checked before any training; the only file written is ``DIR/model.nsk``, atomically,
at the end, with the profile table (accuracy, MACs, latency per operating point) inside. ``netshrink
eval``'s budget options (``netshrink.cli.budget``) pick a point of it.
"""

from __future__ import annotations

import argparse

from netshrink.cli.args import (
    FINE_TUNING,
    OUTPUT_NAME,
    add_command,
    data_args,
    fit_args,
    fit_config,
    load_data,
    out_args,
    out_folder,
)
from netshrink.cli.loading import check_fits, load_any_model

#: ``netshrink.dynamic.early_exit.HEADS``, copied because importing it imports torch (a test keeps them equal)
HEADS = ("linear", "conv", "pooled_conv")


def add_dynamic_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink dynamic`` and its options (``run_dynamic`` does the work)."""
    p = add_command(commands, "dynamic", "add early exits (BranchyNet) or slimmable widths (Yu et al. 2019) to a "
                    "checkpoint, train them jointly, profile every operating point and write a .nsk", run_dynamic,
                    parents=[data_args(), fit_args(FINE_TUNING, "joint training epochs", epochs_required=True),
                             out_args(OUTPUT_NAME)])
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--exits", help="comma-separated blocks to add an exit after, e.g. features.2,features.5")
    what.add_argument("--widths", help="comma-separated widths in (0, 1] including 1, e.g. 0.25,0.5,0.75,1")
    p.add_argument("--head", choices=HEADS, default="linear", help="exit head (--exits)")
    p.add_argument("--pool", type=int, default=4, help="pooled grid side of exit heads on conv features")
    p.add_argument("--distill", type=float, default=0.5,
                   help="weight of distilling each exit from the last (--exits), in [0, 1]")
    p.add_argument("--max-drop", type=float, default=0.005,
                   help="calibrate exit thresholds on val for at most this accuracy drop (fraction)")


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
    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.core.errors import ConfigError
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
    from netshrink.train import fit

    config = fit_config(args)
    if not 0.0 <= args.distill <= 1.0 or not 0.0 <= args.max_drop <= 1.0:
        raise ConfigError(f"--distill and --max-drop must be in [0, 1], got {args.distill} and {args.max_drop}")
    widths = _widths(args.widths) if args.widths else None
    out = out_folder(args)
    model = load_any_model(args.checkpoint)
    data = load_data(args)
    check_fits(model, data, args.checkpoint)
    finalize_(model)
    model.train()
    if widths is not None:
        slimmable_(model, Slimmable(widths=widths))
        set_width(model, 1.0)
        fit(model, data, config, loss_fn=sandwich_loss(model), progress=False, device=args.device)
        model.cpu()  # profiled (latency on this machine's CPU) and saved on the CPU
        points = profile_table(profile_(model, Profile(val=data.val, input_shape=data.input_shape)))["points"]
    else:
        early_exit_(model, EarlyExit(after=tuple(_listed(args.exits, "--exits")), head=args.head, pool=args.pool,
                                     input_shape=tuple(data.input_shape)))
        fit(model, data, config, loss_fn=exit_loss(model, distill=args.distill), progress=False, device=args.device)
        model.cpu()
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
