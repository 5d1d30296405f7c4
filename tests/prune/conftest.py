import pytest
import torch

from tests.models import TINY_MODELS


@pytest.fixture(params=sorted(TINY_MODELS))
def named_model(request):
    """``(name, model)`` for each tiny model, freshly built with a fixed seed."""
    torch.manual_seed(0)
    return request.param, TINY_MODELS[request.param]()
