"""Distillation benchmark (issue 9): Hinton et al. 2015 on Fashion-MNIST, convnet teachers.

    python benchmarks/distillation.py                    # every stage (resumable, see below)
    python benchmarks/distillation.py --stage teachers   # train the 2 extra convnet teachers only
    python benchmarks/distillation.py --quick --out runs/distill-quick   # tiny budgets, proves the script

Stages (each keeps its result in ``--out``, so a killed run continues where it stopped):

- ``teachers``: two more convnets (seeds 1 and 2, the baselines recipe) beside the kept
  ``benchmarks/checkpoints/convnet.safetensors`` (seed 0), kept as
  ``benchmarks/checkpoints/convnet_seed{1,2}.safetensors``; their training is itself resumable.
- ``sweep``: lenet300_100 distilled from the seed-0 convnet at T in (1, 2, 4, 8, 20); T is picked
  on the validation split; a table and ``distillation_temperature.png``.
- ``gap``: lenet300_100 and lenet5 distilled with the picked T, with the recipe (epochs,
  augmentation, seed) of their kept checkpoints, which are the students trained alone; gap
  closure = (distilled - alone) / (teacher - alone) in test accuracy.
- ``ensemble``: lenet300_100 taught by the 3 convnets (softened outputs averaged) against the
  same student taught by the best single one (best on validation).
- ``omit``: class 3 (Dress) left out of the transfer set; that class's test accuracy before and
  after the bias adjustment chosen on validation (Hinton et al. 2015, sec. 3).
- ``throughput``: training samples/s of the same student and teacher with and without the
  teacher-logit cache, measured in the same run.

Writes ``benchmarks/results/distillation.json``, the plot beside it and the distillation section
of BENCHMARKS.md (``--quick`` writes only into ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import CHECKPOINTS  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402

TEACHER_SEEDS = (0, 1, 2)  # seed 0 is the kept baseline convnet
TEACHER_RECIPE = {"epochs": 12, "lr": 0.05, "batch_size": 128, "augment": True}  # baselines.py's
TEACHER_LOG = CHECKPOINTS / "distillation_teachers.json"


def teacher_path(seed: int, quick_dir: Path | None) -> Path:
    """The kept checkpoint of the convnet trained with ``seed`` (under ``quick_dir`` in quick mode)."""
    name = "convnet.safetensors" if seed == 0 else f"convnet_seed{seed}.safetensors"
    return (quick_dir / "teachers" / name) if quick_dir is not None else CHECKPOINTS / name


def train_teachers(data, out: Path, device: str, quick: bool) -> None:
    """Train every missing teacher (seeds 1, 2; seed 0 too in quick mode) with the baselines recipe.

    Each run checkpoints into ``out/teacher_seed<k>`` and resumes there after a kill."""
    from netshrink.measure import evaluate
    from netshrink.models import create
    from netshrink.train import FitConfig, fit, save_model

    log = json.loads(TEACHER_LOG.read_text()) if TEACHER_LOG.exists() and not quick else {}
    for seed in TEACHER_SEEDS:
        path = teacher_path(seed, out if quick else None)
        if path.exists():
            continue
        recipe = {**TEACHER_RECIPE, "epochs": 1} if quick else TEACHER_RECIPE
        torch.manual_seed(seed)
        model = create("convnet", input_shape=list(data.input_shape), num_classes=data.num_classes)
        config = FitConfig(seed=seed, **recipe)
        began = time.perf_counter()
        result = fit(model, data, config, out_dir=out / f"teacher_seed{seed}", resume=True, device=device,
                     progress=sys.stderr.isatty())
        seconds = time.perf_counter() - began
        trained = result.model.cpu()
        save_model(path, trained)
        test_acc = evaluate(trained, data.test)
        print(f"teacher seed {seed}: val {result.val_acc:.4f} test {test_acc:.4f} in {seconds:.0f} s", flush=True)
        if not quick:
            log[path.name] = {"device": _device_name(device), "torch": torch.__version__,
                              "train_seconds_last_session": seconds, "fit_config": config.to_dict(),
                              "val_acc": result.val_acc, "test_acc_at_training": test_acc,
                              "history": result.history}
            write_atomically(TEACHER_LOG, (json.dumps(log, indent=2) + "\n").encode())


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["all", "teachers"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny budgets on a data subset; writes only to --out")
    parser.add_argument("--out", default="runs/distillation-benchmark", help="run folder (resumable stages)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    from netshrink.data import load_dataset

    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    out = Path(args.out)
    train_teachers(data, out, args.device, args.quick)


if __name__ == "__main__":
    main()
