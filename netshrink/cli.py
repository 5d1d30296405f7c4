"""The ``netshrink`` command. Bad input: one line on stderr and a non-zero exit (traceback only
with ``--debug``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _add_data_args(parser: argparse.ArgumentParser, default: str | None = "fashion-mnist") -> None:
    parser.add_argument("--data", default=default,
                        help="fashion-mnist, digits, a .npz (x_train, y_train, x_test, y_test) or an "
                             "image folder with train/ and test/ (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST IDX files (default: $NETSHRINK_DATA or "
                             "/usr/share/datasets/fashion-mnist)")


def _cmd_models(args: argparse.Namespace) -> int:
    from netshrink.measure import count_parameters
    from netshrink.models import create, list_models

    for name in list_models():
        print(f"{name:<16} {count_parameters(create(name)):>10,} parameters (28x28 input)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from netshrink.core.errors import ConfigError
    from netshrink.data import load_dataset
    from netshrink.measure import evaluate
    from netshrink.models import create, list_models
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
    model_kwargs = {"num_classes": data.num_classes, **kwargs}
    if args.model == "lenet300_100":
        model_kwargs.setdefault("in_features", int(data.train.x[0].numel()))
    else:
        model_kwargs.setdefault("input_shape", list(data.input_shape))
    import torch

    torch.manual_seed(args.seed)
    model = create(args.model, **model_kwargs)
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from netshrink.data import load_dataset
    from netshrink.measure import format_layer_table, layer_table, measure_model

    model = _load_any_model(args.checkpoint)
    data = load_dataset(args.data, data_dir=args.data_dir)
    _check_fits(model, data, args.checkpoint)
    report = measure_model(model, data.input_shape, data.test, threads=args.threads)
    report["file_bytes"] = Path(args.checkpoint).stat().st_size
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_layer_table(layer_table(model, data.input_shape)))
    lat = report["latency"]
    print(f"\ntest accuracy {report['accuracy']:.4f} | params {report['params']:,} "
          f"(nonzero {report['nonzero_params']:,}) | MACs {report['macs']:,} | file "
          f"{report['file_bytes']:,} B (dense fp32 {report['dense_fp32_bytes']:,} B)\n"
          f"latency ({args.threads} thread(s)): batch 1 {lat['batch_1']['median_ms']:.3f} ms, "
          f"batch 256 {lat['batch_256']['median_ms']:.2f} ms (median)")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from netshrink.codec.inspect import inspect_report

    print(inspect_report(args.file))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from netshrink.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netshrink", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="train a zoo model (checkpoint every epoch, --resume after a kill)")
    p.add_argument("--model", required=True, help="zoo name (see `netshrink models`)")
    p.add_argument("--model-kwargs", default=None, help='JSON of extra model kwargs, e.g. \'{"hidden": 128}\'')
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"],
                   help="learning-rate schedule, per step (default: %(default)s)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="(default: %(default)s)")
    p.add_argument("--augment", action="store_true", help="random crop and horizontal flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", required=True, help="run folder (checkpoint.safetensors, model.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="accuracy, size, MACs and latency of a checkpoint or .nsk file")
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    _add_data_args(p)
    p.add_argument("--threads", type=int, default=1, help="threads for latency (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("inspect", help="per-layer table of a .nsk file (Deep Compression Table 2 form)")
    p.add_argument("file")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="the main job on the embedded default: train, compress, measure")
    _add_data_args(p)
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=8)
    p.set_defaults(func=_cmd_demo)
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
