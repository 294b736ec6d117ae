"""Shared fixtures. Tests mirror the source folders: tests/sdk, tests/deploy, ..."""
import os

import pytest

# One intra-op thread keeps small tensor ops fast and timings out of the tests' way.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ModuleNotFoundError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
