"""Data parallel fit with 2 CPU processes (gloo): the weights of one process with the same global
batch, on tensors and on a torch Dataset; exact mid-epoch resume of a BatchNorm model; a diverged
loss on one rank stops every rank. One run goes through the real ``torchrun`` launcher (the README's
way in); the others fork their ranks from this process (tests/forked.py), which spares each process
torch's import."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netshrink.train import fit, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.forked import run_ranks
from tests.models import TINY_MODELS
from tests.train import run_fit

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT_S = 600  # a guard against hangs only: a loaded 2-core machine takes ~60 s per launch


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(Path(run_fit.__file__)),
                           *argv], check=False, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _forked(argv: list[str]) -> subprocess.CompletedProcess:
    """Both ranks forked; fails with rank 1's stderr if only rank 1 fails, else rank 0's outcome."""
    ranks = run_ranks(run_fit.main, argv, TIMEOUT_S)
    failed = [rank for rank in ranks if rank.returncode != 0]
    return failed[0] if failed else ranks[0]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["tensors", "dataset"])
def test_two_process_ddp_matches_one_process(tmp_path, digits, source):
    # 1213 training samples: the last global batch (61) splits unevenly, 31 + 30
    argv = [str(tmp_path), "--model", "lenet300_100", "--epochs", "2", "--batch-size", "64",
            "--source", source]
    done = (_torchrun if source == "dataset" else _forked)(argv)
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


@pytest.mark.slow
def test_ddp_resume_mid_epoch_with_batchnorm_matches_uninterrupted_run(tmp_path, digits):
    """The convnet's BatchNorm normalises each rank's share with its own statistics and its dropout
    draws from each rank's RNG; it learns, every rank ends with the model rank 0 saves, and a run
    stopped mid-epoch resumes to the same weights."""
    # 19 steps per epoch; checkpoints after global steps 5, 10, 15, (epoch), 20, 25; crash in 27
    common = ["--model", "convnet", "--epochs", "2", "--batch-size", "64", "--checkpoint-every-steps", "5",
              "--rank-state"]
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    done = _forked([str(reference_dir), *common])
    assert done.returncode == 0, done.stderr[-3000:]
    crashed = _forked([str(resumed_dir), *common, "--crash-at-step", "27"])
    assert crashed.returncode != 0 and "crash at step 27" in crashed.stderr
    meta = load_checkpoint(resumed_dir / CHECKPOINT_NAME)[1]
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 6)
    done = _forked([str(resumed_dir), *common, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]

    reference, _ = load_checkpoint(reference_dir / MODEL_NAME)
    assert any("running_mean" in key for key in reference)
    for folder in (reference_dir, resumed_dir):
        for name in (MODEL_NAME, "rank0.safetensors", "rank1.safetensors"):
            weights, _ = load_checkpoint(folder / name)
            assert weights.keys() == reference.keys()
            for key, value in reference.items():
                assert torch.equal(weights[key], value), (folder.name, name, key)
    history = [load_checkpoint(folder / CHECKPOINT_NAME)[1]["history"] for folder in (reference_dir, resumed_dir)]
    assert [row["val_acc"] for row in history[0]] == [row["val_acc"] for row in history[1]]
    assert history[0][-1]["val_acc"] > 0.7  # chance is 0.1; one process, seeds 0-3: 0.86-0.93


@pytest.mark.slow
def test_diverged_loss_on_one_rank_stops_every_rank(tmp_path):
    """Only rank 1's loss is NaN (its gradients are not). Deciding on each rank's own loss let
    rank 1 raise while rank 0 went on into the next all-reduce, where it waits as long as rank 1's
    process lives and dies with gloo's "Connection closed by peer" once it exits (measured), never
    naming the divergence. Launched without torchrun, which would kill the waiting rank itself."""
    ranks = run_ranks(run_fit.main, [str(tmp_path), "--model", "user_mlp", "--epochs", "1", "--batch-size", "32",
                                     "--nan-loss-on-rank", "1"], TIMEOUT_S)
    assert [rank.returncode for rank in ranks] == [1, 1]
    assert all("training diverged" in rank.stderr for rank in ranks), ranks[0].stderr[-2000:]
