"""``netshrink prune``: prune a trained checkpoint, fine-tune it, write the .nsk, print the table.

    netshrink prune CHECKPOINT --sparsity 0.9 [--scope global] [--schedule oneshot|gradual|iterative]
        [--structured --amount 0.5] --finetune-epochs N --out DIR

Every value is checked, and the model is checked against the data, before any work; the only file
written is ``DIR/model.nsk``, atomically, at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUTPUT_NAME = "model.nsk"


def add_prune_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink prune`` and its options (``run_prune`` does the work)."""
    from netshrink.cli import _add_data_args, add_command

    p = add_command(commands, "prune", "prune a checkpoint by magnitude or structure, fine-tune it and write "
                    "a .nsk (Han et al. 2015; Zhu & Gupta 2017)", run_prune)
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    _add_data_args(p)
    p.add_argument("--sparsity", type=float, default=None, help="fraction of weights to zero, in [0, 1)")
    p.add_argument("--scope", choices=["layer", "global"], default="layer",
                   help="the same fraction in every layer, or one magnitude threshold over all")
    p.add_argument("--schedule", choices=["oneshot", "gradual", "iterative"], default="oneshot",
                   help="prune then fine-tune; prune gradually while fine-tuning (cubic); or --rounds "
                        "rounds of prune then fine-tune")
    p.add_argument("--rounds", type=int, default=3, help="prune-retrain rounds of --schedule iterative")
    p.add_argument("--structured", action="store_true",
                   help="first remove whole neurons / channels (--amount of each group); the model shrinks")
    p.add_argument("--amount", type=float, default=0.5, help="fraction of channels --structured removes")
    p.add_argument("--ranking", choices=["l1", "l2", "bn"], default="l1", help="channel ranking of --structured")
    p.add_argument("--finetune-epochs", type=int, required=True, metavar="N",
                   help="fine-tuning epochs (per round with --schedule iterative; 0 = none)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (cosine decay)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=f"output folder; receives {OUTPUT_NAME}")


def _checked(args: argparse.Namespace):
    """The fine-tuning config, after every option has been checked (one-line ConfigErrors)."""
    from netshrink.core.errors import ConfigError
    from netshrink.prune.selection import check_sparsity
    from netshrink.train import FitConfig

    if args.sparsity is None and not args.structured:
        raise ConfigError("say what to prune: --sparsity S (magnitude) and/or --structured --amount A")
    if args.sparsity is not None:
        check_sparsity(args.sparsity, "--sparsity")
    if args.structured:
        check_sparsity(args.amount, "--amount")
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if args.sparsity is not None and args.schedule != "oneshot" and args.finetune_epochs < 1:
        raise ConfigError(f"--schedule {args.schedule} prunes while fine-tuning; give --finetune-epochs 1 or more")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {args.rounds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    return FitConfig(epochs=max(1, args.finetune_epochs), lr=args.lr, batch_size=args.batch_size, seed=args.seed)


def run_prune(args: argparse.Namespace) -> int:
    import torch

    from netshrink.cli import _check_fits, _load_any_model
    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.data import load_dataset
    from netshrink.measure import count_nonzero, count_parameters, evaluate
    from netshrink.prune import GradualPrune, MagnitudePrune, StructuredPrune, iterative_prune, prune_
    from netshrink.train import fit

    config = _checked(args)
    model = _load_any_model(args.checkpoint)
    data = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    _check_fits(model, data, args.checkpoint)
    before = {"test": evaluate(model, data.test), "params": count_parameters(model),
              "nonzero": count_nonzero(model)}
    torch.manual_seed(args.seed)
    model.train()
    if args.structured:
        prune_(model, StructuredPrune(amount=args.amount, ranking=args.ranking))
    tune = args.finetune_epochs > 0
    if args.sparsity is not None and args.schedule == "iterative":
        iterative_prune(model, data, args.sparsity, args.rounds, config, scope=args.scope, progress=False)
        tune = False
    elif args.sparsity is not None and args.schedule == "gradual":
        fit(model, data, config, progress=False, callbacks=[GradualPrune(args.sparsity, scope=args.scope)])
        tune = False
    elif args.sparsity is not None:
        prune_(model, MagnitudePrune(sparsity=args.sparsity, scope=args.scope))
    if tune:
        fit(model, data, config, progress=False)
    finalize_(model)
    path = Path(args.out) / OUTPUT_NAME
    save(model, path)
    _report(model, data, before, path)
    return 0


def _report(model, data, before: dict, path: Path) -> None:
    from netshrink.measure import count_nonzero, count_parameters, evaluate, format_layer_table, layer_table
    from netshrink.measure.size import fp32_baseline

    print(format_layer_table(layer_table(model, data.input_shape)))
    test, params, nonzero = evaluate(model, data.test), count_parameters(model), count_nonzero(model)
    print(f"\ntest accuracy {test:.4f} (before {before['test']:.4f}) | params {params:,} (before "
          f"{before['params']:,}) | nonzero {nonzero:,} (before {before['nonzero']:,}; "
          f"{before['nonzero'] / max(1, nonzero):.1f}x fewer) | {path} "
          f"{fp32_baseline(model).versus(path.stat().st_size)}")
