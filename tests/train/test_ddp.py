"""torchrun with 2 CPU processes (gloo) gives the weights of one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netshrink.train import fit, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.models import TINY_MODELS
from tests.train import run_fit

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, digits):
    # 1213 training samples: the last global batch (61) splits unevenly, 31 + 30
    argv = [str(tmp_path), "--model", "lenet300_100", "--epochs", "2", "--batch-size", "64"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2",
                           str(Path(run_fit.__file__)), *argv],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, MODEL_NAME]
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert meta["world_size"] == 2 and meta["epoch"] == 2
    assert {"rng.torch.0", "rng.torch.1", "rng.augment.0", "rng.augment.1"} <= set(tensors)
    distributed_weights, _ = load_checkpoint(tmp_path / MODEL_NAME)

    torch.manual_seed(0)
    single = fit(TINY_MODELS["lenet300_100"](), digits,
                 run_fit.config_from_args(run_fit.parse_args(argv)), progress=False)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(distributed_weights[key], value, rtol=0, atol=1e-5)
    for ours, theirs in zip(single.history, meta["history"], strict=True):
        assert theirs["train_loss"] == pytest.approx(ours["train_loss"], abs=1e-5)
        assert theirs["val_acc"] == pytest.approx(ours["val_acc"], abs=1e-2)
