"""Shared fixtures. The suite runs at any thread count (CI: OMP_NUM_THREADS=1 and =2);
`torch_threads` runs a test at 1 and at 2 torch threads and restores the count after; `ext`
is the compiled kernel (the test skips without it) and `isa` runs a test on both copies of
its hot loops."""
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


@pytest.fixture
def ext():
    from gscodec.render import extension
    k = extension.kernel()
    if k is None:
        pytest.skip(f"compiled CPU kernel unavailable: {extension.unavailable_reason()}")
    return k


@pytest.fixture(params=["avx2", "baseline"])
def isa(request, ext):
    """Both copies of the hot loops (the AVX2+FMA ones where the CPU has AVX2)."""
    if request.param == "avx2" and ext.isa() != "avx2":
        pytest.skip("no AVX2 here")
    ext._set_isa(request.param)
    yield request.param
    ext._set_isa("auto")
