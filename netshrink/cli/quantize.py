"""``netshrink quantize`` (``netshrink export`` is in ``export.py``).

    netshrink quantize CHECKPOINT --method uniform|cluster|binary --bits 4 [--per-channel] \\
        [--epochs N --data fashion-mnist] --out DIR          # writes DIR/model.nsk

Every input (bits, method, data shape) is checked before anything is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from netshrink.cli.args import (
    FINE_TUNING,
    OUTPUT_NAME,
    add_command,
    checkpoint_args,
    data_args,
    fit_args,
    fit_config,
    load_data,
    out_args,
    out_folder,
)
from netshrink.cli.loading import check_fits, load_any_model

METHODS = ("uniform", "cluster", "binary")
DEFAULT_BITS = {"uniform": "8", "cluster": "4", "binary": "1"}
CALIBRATION_IMAGES = 512
TRAINING_FOLDER = "training"


def add_quantize_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink quantize`` (``run_quantize`` does the work)."""
    p = add_command(commands, "quantize", "quantize a checkpoint or .nsk file: uniform int2..int8 / fp16 / bf16, "
                    "weight clustering (k-means shared weights) or binary weights; optional quantization-aware "
                    "training or centroid fine-tuning; writes OUT/model.nsk", run_quantize,
                    parents=[data_args(default=None, when_absent=" (none: no training, no accuracy)"),
                             fit_args(FINE_TUNING, "epochs of quantization-aware training / centroid fine-tuning "
                                      "on --data (0 = post-training only)"), checkpoint_args(),
                             out_args(f"{OUTPUT_NAME} (and the training's checkpoint in {TRAINING_FOLDER}/)")])
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--method", default="uniform", choices=METHODS, help="uniform grid, clustering or binary")
    p.add_argument("--bits", default=None, help="bits per weight: 2..8, fp16 or bf16 (uniform; default 8), "
                   "1..8 (cluster; default 4), 1 (binary)")
    p.add_argument("--per-channel", action="store_true", help="uniform: one scale per output channel")
    p.add_argument("--scheme", default="symmetric", choices=["symmetric", "affine"], help="uniform: grid scheme")
    p.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "mse"],
                   help="uniform: how the clipping range is chosen")
    p.add_argument("--activation-bits", type=int, default=None, help="uniform: also quantize layer inputs to this "
                   f"many bits, calibrated on {CALIBRATION_IMAGES} validation images of --data")
    p.add_argument("--init", default="linear", choices=["linear", "density", "random", "optimal"],
                   help="cluster: centroid initialisation (Deep Compression 3.2; optimal = Ckmeans.1d.dp)")
    p.add_argument("--binary-method", default="bwn", choices=["bwn", "binaryconnect"],
                   help="binary: scaled signs (XNOR-Net BWN) or plain signs (BinaryConnect)")


def _config(args: argparse.Namespace, data: Any) -> Any:
    from netshrink.core.errors import ConfigError
    from netshrink.quant import Binarize, Cluster, Quantize

    bits_text = args.bits if args.bits is not None else DEFAULT_BITS[args.method]
    bits = int(bits_text) if bits_text.isdigit() else bits_text  # the configs check the range
    if args.method == "uniform":
        calibration = None if args.activation_bits is None else (
            data.val if len(data.val) else data.train).x[:CALIBRATION_IMAGES]
        return Quantize(bits=bits, scheme=args.scheme, calibration=args.calibration,
                        granularity="channel" if args.per_channel else "tensor",
                        activation_bits=args.activation_bits, calibration_data=calibration)
    if args.method == "cluster":
        return Cluster(bits=bits, init=args.init)
    if bits != 1:
        raise ConfigError(f"binary weights have 1 bit, got --bits {bits_text}; leave --bits out")
    return Binarize(method=args.binary_method)


def run_quantize(args: argparse.Namespace) -> int:
    import netshrink
    from netshrink.core.errors import ConfigError
    from netshrink.measure import evaluate
    from netshrink.measure.size import fp32_baseline

    training = fit_config(args, none_at_zero=True)
    if training is not None and args.data is None:
        raise ConfigError("--epochs needs training data; add --data (e.g. --data fashion-mnist)")
    if args.activation_bits is not None and (args.method != "uniform" or args.data is None):
        raise ConfigError("--activation-bits needs --method uniform and --data (its validation images calibrate "
                          "the activation grids)")
    out = out_folder(args)
    model = load_any_model(args.checkpoint)
    data = None
    if args.data is not None:
        data = load_data(args)
        check_fits(model, data, args.checkpoint)
        before = evaluate(model, data.test)
    config = _config(args, data)
    netshrink.apply_(model, config)
    if training is not None:
        netshrink.fit(model, data, training, out_dir=out / TRAINING_FOLDER, resume=args.resume,
                      progress=not args.no_progress, device=args.device)
        model.cpu()  # finalized, saved and measured on the CPU, wherever it trained
    netshrink.finalize_(model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    netshrink.save(model, path)
    line = f"{path}: {fp32_baseline(model).versus(path.stat().st_size)}"
    if data is not None:
        line += f" | test accuracy {evaluate(model, data.test):.4f} (before {before:.4f})"
    print(line)
    return 0
