import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread and deterministic kernels, as the subprocess runs use (bit-exactness)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
