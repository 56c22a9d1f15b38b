"""Fixtures of the engine's tests."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are overhead-bound: one torch thread is as fast idle and far faster on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
