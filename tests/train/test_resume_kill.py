"""A training process killed with SIGKILL resumes to exactly the weights of an uninterrupted run. The
process is forked from this one (tests/forked.py), so it does not pay torch's import again."""

import pytest
import torch

from netshrink.train import fit, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.forked import Forked
from tests.kill import kill_after_epoch
from tests.models import TINY_MODELS
from tests.train import run_fit

EPOCHS = 5
TIMEOUT_S = 120


@pytest.mark.slow
def test_killed_run_resumes_bit_exactly(tmp_path, digits):
    argv = [str(tmp_path), "--model", "convnet", "--epochs", str(EPOCHS), "--batch-size", "16",
            "--augment"]
    proc = Forked(run_fit.main, argv)
    checkpoint = tmp_path / CHECKPOINT_NAME
    kill_after_epoch(proc, checkpoint, 2, TIMEOUT_S)
    killed_at = load_checkpoint(checkpoint)[1]["epoch"]
    assert 2 <= killed_at < EPOCHS and not (tmp_path / MODEL_NAME).exists()

    config = run_fit.config_from_args(run_fit.parse_args(argv))
    torch.manual_seed(0)
    resumed = fit(TINY_MODELS["convnet"](), digits, config, out_dir=tmp_path, resume=True,
                  progress=False)
    torch.manual_seed(0)
    reference = fit(TINY_MODELS["convnet"](), digits, config, progress=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.val_acc == reference.val_acc
    assert [h["epoch"] for h in resumed.history] == list(range(1, EPOCHS + 1))
