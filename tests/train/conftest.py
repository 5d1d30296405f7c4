import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread and deterministic kernels, as the subprocess runs use: bit-exact
    comparisons, and no thread oversubscription on a shared 2-core machine."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
