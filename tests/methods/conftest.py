import pytest
import torch


@pytest.fixture
def one_thread():
    """As Ray's trainable runs a 1-CPU trial (smoke_fit asks for cpu 1): torch.set_num_threads(1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
