import pytest
import torch

from netshrink.data import load_digits
from tests.models import TINY_MODELS


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as a netshrink Dataset (fast, always available)."""
    return load_digits()


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request):
    """Each tiny model in tests/models.py, freshly built with a fixed seed."""
    torch.manual_seed(0)
    return TINY_MODELS[request.param]()
