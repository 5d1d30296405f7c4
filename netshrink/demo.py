"""``netshrink demo``: the main job on the embedded default data (Fashion-MNIST).

Trains LeNet-300-100, measures it, writes the compressed .nsk file and shows its table. Each
compression family adds its stage here as it lands; every figure printed is measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def run_demo(args: argparse.Namespace) -> int:
    from netshrink.codec.container import load, save
    from netshrink.codec.inspect import inspect_report
    from netshrink.data import load_dataset
    from netshrink.measure import dense_fp32_bytes, evaluate, measure_model
    from netshrink.models import create_for_data
    from netshrink.train import FitConfig, fit

    out = Path(args.out)
    data = load_dataset(args.data, data_dir=args.data_dir)
    torch.manual_seed(0)
    model = create_for_data("lenet300_100", data.input_shape, data.num_classes)
    print(f"[1/3] training lenet300_100 on {data.name} for {args.epochs} epochs")
    result = fit(model, data, FitConfig(epochs=args.epochs, lr=0.05, batch_size=128), out_dir=out)
    model = result.model.eval()

    print("[2/3] measuring")
    report = measure_model(model, data.input_shape, data.test)
    print(f"      test accuracy {report['accuracy']:.4f}, {report['params']:,} parameters, "
          f"{report['macs']:,} MACs, batch-1 latency {report['latency']['batch_1']['median_ms']:.3f} ms "
          f"(1 thread)")

    print("[3/3] writing the compressed file")
    nsk = out / "model.nsk"
    save(model, nsk)
    restored = load(nsk)
    same = torch.equal(restored.eval()(data.test.x[:256]), model(data.test.x[:256]))
    print(inspect_report(nsk))
    print(f"\n{nsk}: {nsk.stat().st_size:,} bytes vs dense fp32 {dense_fp32_bytes(model):,} bytes; "
          f"reloaded outputs equal: {same}; reloaded test accuracy "
          f"{evaluate(restored, data.test):.4f}")
    return 0 if same else 1
