"""Shared fixtures. The suite runs torch on one thread, in this process and in the processes tests
start (``OMP_NUM_THREADS``): the tiny models gain nothing from a second thread on a 2-core machine,
and its spinning costs CPU time the suite's budget counts."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from netshrink.data import load_digits
from tests.models import TINY_MODELS

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as a netshrink Dataset (fast, always available)."""
    return load_digits()


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request):
    """Each tiny model in tests/models.py, freshly built with a fixed seed."""
    torch.manual_seed(0)
    return TINY_MODELS[request.param]()
