"""Runs ``recover`` on a 2-bit tiny BERT in its own process(es), for the torchrun test.

    torchrun --standalone --nproc_per_node=2 tests/distill/run_recover.py OUT_DIR

or forked by the test (tests/forked.py), which calls ``main``.

The repository root must be on PYTHONPATH. The models are built with ``torch.manual_seed(0)``,
like the in-process reference run of the test.
"""

from __future__ import annotations

import copy
import sys

import torch

import netshrink
from netshrink.distillation import Recover, recover
from netshrink.train import FitConfig
from tests.models import tiny_bert, token_inputs

#: 66 samples in global batches of 16: the last (2) splits 1 + 1 over two ranks
DATA = {"samples": 66, "seed": 2}
CONFIG = FitConfig(epochs=2, batch_size=16, lr=0.1, weight_decay=0.0)
RECOVER = Recover(match="hidden", loss="cosine")


def bert_pair():
    """An original tiny BERT and its copy quantized to 2 bits per output channel."""
    torch.manual_seed(0)
    teacher = tiny_bert().eval()
    student = copy.deepcopy(teacher)
    netshrink.apply_(student, netshrink.Quantize(bits=2, granularity="channel"))
    return student, teacher


def run(out_dir=None):
    student, teacher = bert_pair()
    recover(student, teacher, token_inputs(DATA["samples"], seed=DATA["seed"]), RECOVER, CONFIG,
            out_dir=out_dir, progress=False)
    return student


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    run(sys.argv[1])


if __name__ == "__main__":
    main()
