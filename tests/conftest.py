import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Seed torch and keep it to the machine's two cores for every test."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield
