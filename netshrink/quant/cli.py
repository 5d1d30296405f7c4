"""``netshrink quantize`` and ``netshrink export``.

    netshrink quantize CHECKPOINT --method uniform|cluster|binary --bits 4 [--per-channel] \\
        [--qat-epochs N --data fashion-mnist] --out DIR          # writes DIR/model.nsk
    netshrink export FILE --onnx OUT.onnx [--int8] --data fashion-mnist

Every input (bits, method, data shape) is checked before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("uniform", "cluster", "binary")
DEFAULT_BITS = {"uniform": "8", "cluster": "4", "binary": "1"}


def add_quantize_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink quantize`` (``run_quantize`` does the work)."""
    from netshrink.cli import _add_data_args, add_command

    p = add_command(commands, "quantize", "quantize a checkpoint or .nsk file: uniform int2..int8 / fp16 / bf16, "
                    "weight clustering (k-means shared weights) or binary weights; optional quantization-aware "
                    "training or centroid fine-tuning; writes OUT/model.nsk", run_quantize)
    p.add_argument("checkpoint", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--method", default="uniform", choices=METHODS, help="uniform grid, clustering or binary")
    p.add_argument("--bits", default=None, help="bits per weight: 2..8, fp16 or bf16 (uniform; default 8), "
                   "1..8 (cluster; default 4), 1 (binary)")
    p.add_argument("--per-channel", action="store_true", help="uniform: one scale per output channel")
    p.add_argument("--scheme", default="symmetric", choices=["symmetric", "affine"], help="uniform: grid scheme")
    p.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "mse"],
                   help="uniform: how the clipping range is chosen")
    p.add_argument("--activation-bits", type=int, default=None, help="uniform: also quantize layer inputs to this "
                   "many bits, calibrated on 512 validation images of --data")
    p.add_argument("--init", default="linear", choices=["linear", "density", "random", "optimal"],
                   help="cluster: centroid initialisation (Deep Compression 3.2; optimal = Ckmeans.1d.dp)")
    p.add_argument("--binary-method", default="bwn", choices=["bwn", "binaryconnect"],
                   help="binary: scaled signs (XNOR-Net BWN) or plain signs (BinaryConnect)")
    p.add_argument("--qat-epochs", type=int, default=0, help="epochs of quantization-aware training / centroid "
                   "fine-tuning on --data (0: post-training only)")
    _add_data_args(p, default=None)
    p.add_argument("--lr", type=float, default=0.005, help="learning rate of the training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the training epochs")
    p.add_argument("--out", required=True, help="output folder (model.nsk)")


CALIBRATION_IMAGES = 512


def _config(args: argparse.Namespace, data):
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
    from netshrink.cli import _check_fits, _load_any_model
    from netshrink.core.errors import ConfigError
    from netshrink.measure import evaluate
    from netshrink.measure.size import fp32_baseline

    if args.qat_epochs < 0:
        raise ConfigError(f"--qat-epochs must be 0 or more, got {args.qat_epochs}")
    if args.qat_epochs and args.data is None:
        raise ConfigError("--qat-epochs needs training data; add --data (e.g. --data fashion-mnist)")
    if args.activation_bits is not None and (args.method != "uniform" or args.data is None):
        raise ConfigError("--activation-bits needs --method uniform and --data (its validation images calibrate "
                          "the activation grids)")
    model = _load_any_model(args.checkpoint)
    data = None
    if args.data is not None:
        data = netshrink.load_dataset(args.data, data_dir=args.data_dir)
        _check_fits(model, data, args.checkpoint)
        before = evaluate(model, data.test)
    config = _config(args, data)
    netshrink.apply_(model, config)
    out = Path(args.out)
    if args.qat_epochs:
        netshrink.fit(model, data, netshrink.FitConfig(epochs=args.qat_epochs, lr=args.lr, batch_size=args.batch_size,
                                                       weight_decay=0.0), out_dir=out / "training", progress=False)
    netshrink.finalize_(model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.nsk"
    netshrink.save(model, path)
    line = f"{path}: {fp32_baseline(model).versus(path.stat().st_size)}"
    if data is not None:
        line += f" | test accuracy {evaluate(model, data.test):.4f} (before {before:.4f})"
    print(line)
    return 0


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """Declare ``netshrink export`` (``run_export`` does the work)."""
    from netshrink.cli import _add_data_args, add_command

    p = add_command(commands, "export", "export a checkpoint or .nsk file to ONNX, checked by running ONNX Runtime "
                    "against PyTorch; early exits leave by confidence inside the graph (ONNX If), a slimmable "
                    "model writes OUT.onnx at its current width and OUT.width-W.onnx per other width; --int8 also "
                    "writes ONNX Runtime's static int8 model", run_export)
    p.add_argument("file", help="model.safetensors / checkpoint.safetensors / file.nsk")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the fp32 ONNX model")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx, calibrated on validation batches")
    p.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"],
                   help="int8: ONNX Runtime's activation-range calibration")
    p.add_argument("--calibration-samples", type=int, default=512, help="int8: validation images to calibrate on")
    _add_data_args(p)


def run_export(args: argparse.Namespace) -> int:
    import torch

    import netshrink
    from netshrink.cli import _check_fits, _load_any_model
    from netshrink.core.errors import ConfigError
    from netshrink.quant.onnx_export import export_onnx_graphs, onnx_accuracy, quantize_onnx_int8, run_onnx

    if args.calibration_samples < 1:
        raise ConfigError(f"--calibration-samples must be at least 1, got {args.calibration_samples}")
    model = _load_any_model(args.file)
    data = netshrink.load_dataset(args.data, data_dir=args.data_dir)
    _check_fits(model, data, args.file)
    onnx_path = Path(args.onnx)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    check = data.test.x[:256]
    for path, point, difference in export_onnx_graphs(model, onnx_path, check):
        print(f"{path}: {point}; ONNX Runtime vs PyTorch max abs difference {difference:.2e} on {len(check)} "
              "test images")
    if args.int8:
        int8_path = onnx_path.with_suffix(".int8.onnx")
        calibration = (data.val if len(data.val) else data.train).x[:args.calibration_samples]
        quantize_onnx_int8(onnx_path, int8_path, calibration, method=args.calibration)
        with torch.no_grad():
            int8_difference = float(abs(run_onnx(int8_path, check) - model.eval()(check).numpy()).max())
        fp32_acc = onnx_accuracy(onnx_path, data.test.x, data.test.y)
        int8_acc = onnx_accuracy(int8_path, data.test.x, data.test.y)
        print(f"{int8_path}: int8 vs PyTorch max abs difference {int8_difference:.3g}; test accuracy "
              f"{int8_acc:.4f} (fp32 ONNX {fp32_acc:.4f})")
    return 0
