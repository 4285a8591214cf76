"""Shared fixtures. The suite runs at any thread count (CI: OMP_NUM_THREADS=1 and =2);
`torch_threads` runs a test at 1 and at 2 torch threads and restores the count after."""
import pytest


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def torch_threads(request):
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        torch.set_num_threads(old)
