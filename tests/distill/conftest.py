import pytest
import torch

from netshrink.train import FitConfig, fit
from tests.models import TINY_MODELS
from tests.train.conftest import one_thread  # noqa: F401  (autouse: one thread, deterministic kernels)


@pytest.fixture(scope="session")
def teacher_state(digits):
    """Weights of the tiny convnet trained on digits (trained once per session)."""
    torch.manual_seed(0)
    result = fit(TINY_MODELS["convnet"](), digits, FitConfig(epochs=6, batch_size=32), progress=False)
    return {k: v.clone() for k, v in result.model.state_dict().items()}


@pytest.fixture
def teacher(teacher_state):
    """A fresh copy of the trained tiny convnet teacher."""
    model = TINY_MODELS["convnet"]()
    model.load_state_dict(teacher_state)
    return model.eval()
