import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on these tiny tensors OpenMP's synchronisation costs more than it saves, and far
    more (seconds per forward) when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
