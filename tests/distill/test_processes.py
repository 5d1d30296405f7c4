"""distill in its own processes: SIGKILL then resume is bit-exact; 2 ranks match 1. The processes are
forked from this one (tests/forked.py: no fresh torch import each); tests/train/test_ddp.py covers the
real ``torchrun`` launcher."""

import pytest
import torch

from netshrink.distillation import distill
from netshrink.train import load_checkpoint, load_model, save_model
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.distill import run_distill
from tests.forked import Forked, run_ranks
from tests.kill import kill_after_epoch
from tests.models import TINY_MODELS

EPOCHS = 5
TIMEOUT_S = 180


def _reference(argv, teacher_path, digits, **kwargs):
    args = run_distill.parse_args(argv)
    torch.manual_seed(0)
    return distill(TINY_MODELS[args.model](), load_model(teacher_path), digits, *run_distill.configs(args),
                   progress=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("cache", [False, True], ids=["live", "cached"])
def test_killed_distillation_resumes_bit_exactly(cache, teacher, digits, tmp_path):
    teacher_path = tmp_path / "teacher.safetensors"
    save_model(teacher_path, teacher)
    out = tmp_path / "run"
    argv = [str(out), str(teacher_path), "--epochs", str(EPOCHS)] + (["--cache"] if cache else [])
    proc = Forked(run_distill.main, argv)
    kill_after_epoch(proc, out / CHECKPOINT_NAME, 2, TIMEOUT_S)
    assert 2 <= load_checkpoint(out / CHECKPOINT_NAME)[1]["epoch"] < EPOCHS and not (out / MODEL_NAME).exists()
    resumed = _reference(argv, teacher_path, digits, out_dir=out, resume=True)
    reference = _reference(argv, teacher_path, digits)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert [h["epoch"] for h in resumed.history] == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_two_process_ddp_distillation_matches_one_process(teacher, digits, tmp_path):
    teacher_path = tmp_path / "teacher.safetensors"
    save_model(teacher_path, teacher)
    out = tmp_path / "run"
    # the setting of fit's own DDP test: 1213 samples, the last global batch (61) splits 31 + 30
    argv = [str(out), str(teacher_path), "--epochs", "2", "--cache", "--model", "lenet300_100", "--batch-size", "64"]
    for rank in run_ranks(run_distill.main, argv, 300):
        assert rank.returncode == 0, rank.stderr[-3000:]
    assert load_checkpoint(out / CHECKPOINT_NAME)[1]["world_size"] == 2
    distributed_weights, _ = load_checkpoint(out / MODEL_NAME)
    single = _reference(argv, teacher_path, digits)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(distributed_weights[key], value, rtol=0, atol=1e-5)
