import pytest
import torch

from netshrink.data.dataset import Split
from tests.models import TINY_MODELS

#: a block after which each tiny model can take an exit (its output alone carries on)
EXIT_BLOCKS = {"lenet300_100": "fc1", "lenet5": "conv1", "convnet": "features.2", "user_mlp": "body.2",
               "user_resnet": "stem", "transformer": "embed"}
#: tiny models slimmable widths refuse, and why
NOT_SLIMMABLE = {"user_resnet": "grouped/depthwise convolution", "transformer": "outside Linear/Conv2d/BatchNorm"}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: no oversubscription of the shared machine, repeatable sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(TINY_MODELS))
def named_model(request):
    """``(name, model)`` for each tiny model, freshly built with a fixed seed, in eval mode."""
    torch.manual_seed(0)
    return request.param, TINY_MODELS[request.param]().eval()


@pytest.fixture(scope="session")
def small(digits):
    """A small train / val cut of digits, so training tests stay fast."""
    return Split(digits.train.x[:320], digits.train.y[:320]), Split(digits.val.x[:120], digits.val.y[:120])
