"""Tests of the Triton backend (gscodec.render.triton) against the PyTorch reference and,
in exact mode, against the CPU kernel bit for bit.

Without a GPU they run the very same kernels under Triton's interpreter on CPU tensors.
Triton decides at import time whether its own library functions (tl.sum, tl.max, ...) are
interpreted, so TRITON_INTERPRET=1 must be set before triton is first imported in the
process: this module sets it at import, before `import triton` (pytest imports every test
module at collection, before any test runs, and no other module of ours imports triton).
If triton was nevertheless imported earlier without the interpreter (a plugin, say), the
module falls back to running itself in a fresh subprocess with the variable set (one test,
test_triton_backend_in_subprocess). With GSCODEC_TEST_CUDA=1 the tests run compiled on the
GPU. triton is a test dependency: these tests never skip on a CPU machine.

The interpreter is slow (about 10 ms per kernel loop iteration), so sizes and counts are small.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ON_GPU = os.environ.get("GSCODEC_TEST_CUDA") == "1"
_INTERP_WAS_SET = os.environ.get("TRITON_INTERPRET") == "1"
_FALLBACK = not ON_GPU and "triton" in sys.modules and not _INTERP_WAS_SET
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"   # before triton's first import (see above)

import triton  # noqa: F401,E402  (a test dependency: fail, never skip, if missing)

from gscodec.bitstream.model import conics_from_scale_rot  # noqa: E402
from gscodec.render import triton as tb  # noqa: E402
from gscodec.render.torch_reference import render_reference  # noqa: E402
from gscodec.render.triton.binning import exact_chunks  # noqa: E402

from render_cases import gauss as _gauss  # noqa: E402
from render_cases import mixed_gaussians, near_cut_gaussians, needles  # noqa: E402

DEV = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture(scope="module", autouse=True)
def _device_check():
    if ON_GPU:
        assert torch.cuda.is_available(), "GSCODEC_TEST_CUDA=1 but no CUDA device"
    yield


def _ours(means, conics, colors, h, w, **kw):
    return tb.render(means.to(DEV), conics.to(DEV), colors.to(DEV), h, w, **kw).cpu()


def _grads(fn, means, conics, colors, h, w, grad, dev, **kw):
    ts = [t.detach().to(dev).requires_grad_(True) for t in (means, conics, colors)]
    out = fn(*ts, h, w, **kw)
    gs = torch.autograd.grad(out, ts, grad.to(dev))
    return out.detach().cpu(), [g.cpu() for g in gs]


def _assert_grads_close(ours, ref):
    for name, a, b in zip(("means", "conics", "colors"), ours, ref, strict=True):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * scale,
                                   msg=lambda m, name=name: name + m)


SIZES = [(1, 1, 1), (1, 37, 2), (37, 23, 3), (64, 48, 4)]   # (height, width, channels)


@pytest.mark.parametrize("h,w,C", SIZES)
def test_forward_and_backward_match_reference(h, w, C):
    means, conics, colors = mixed_gaussians(12, h, w, C, seed=h * 100 + w)
    ref = render_reference(means, conics, colors, h, w)
    out = _ours(means, conics, colors, h, w)
    assert out.shape == (h, w, C) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # Same q <= Q_CUT support (all colours are positive, so support == nonzero).
    assert torch.equal(out > 0, ref > 0)
    grad = torch.randn(h, w, C, generator=torch.Generator().manual_seed(7))
    _, gref = _grads(render_reference, means, conics, colors, h, w, grad, "cpu")
    _, gdet = _grads(tb.render, means, conics, colors, h, w, grad, DEV, deterministic=True)
    _assert_grads_close(gdet, gref)
    if (h, w) == (37, 23):  # the atomic (default) backward once
        _, gat = _grads(tb.render, means, conics, colors, h, w, grad, DEV)
        _assert_grads_close(gat, gref)
    for g in gdet:
        assert torch.isfinite(g).all()


def test_support_identical_near_the_cut():
    """Per-Gaussian supports (one Gaussian per channel) equal the reference's exactly."""
    means, conics = near_cut_gaussians(8, seed=3)
    for s in range(0, means.shape[0] - 3, 4):
        m, q = means[s:s + 4], conics[s:s + 4]
        colors = torch.eye(4)
        ref = render_reference(m, q, colors, 20, 20)
        out = _ours(m, q, colors, 20, 20)
        assert torch.equal(out > 0, ref > 0)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def _tile_sets(bn: tb.Binning, n):
    """Each Gaussian's tiles according to the binning: its pairs, or for a big-list Gaussian
    every tile of its rectangle (the forward kernel scans the big list in every tile)."""
    T = bn.tiles_x * bn.tiles_y
    sets = [set() for _ in range(n)]
    pt, pg = bn.pair_tile.cpu().tolist(), bn.pair_gid.cpu().tolist()
    ts = bn.tile_start.cpu().tolist()
    for j, (t, gid) in enumerate(zip(pt, pg, strict=True)):
        if t < T:
            assert ts[t] <= j < ts[t + 1]
            sets[gid].add(t)
    assert ts[T] == sum(1 for t in pt if t < T)
    rect = bn.rect.cpu().tolist()
    for gid in bn.big_ids[: int(bn.n_big.item())].cpu().tolist():
        x0, x1, y0, y1 = rect[gid]
        assert not sets[gid], "a Gaussian is either in the pairs or in the big list"
        sets[gid] = {ty * bn.tiles_x + tx for ty in range(y0, y1 + 1)
                     for tx in range(x0, x1 + 1)}
    return sets


@pytest.mark.parametrize("kw", [{}, {"pair_capacity": 7}, {"max_tiles": 1}])
def test_binning_covers_reference_support(kw):
    h, w = 64, 48
    means, conics, _ = mixed_gaussians(16, h, w, 1, seed=11)
    n = means.shape[0]
    for row0, sh in ((0, h), (16, 32)):   # whole image, and a strip
        bn = tb.bin_gaussians(means.to(DEV), conics.to(DEV), row0, sh, w, **kw)
        sets = _tile_sets(bn, n)
        for i in range(n):
            img = render_reference(means[i:i + 1], conics[i:i + 1], torch.ones(1, 1), h, w)
            ys, xs = torch.nonzero(img[row0:row0 + sh, :, 0] != 0, as_tuple=True)
            need = {(y // 16) * bn.tiles_x + x // 16
                    for y, x in zip(ys.tolist(), xs.tolist(), strict=True)}
            assert need <= sets[i], f"Gaussian {i}: tiles {sorted(need - sets[i])} missing"
            if not torch.isfinite(means[i]).all() or not torch.isfinite(conics[i]).all():
                assert not sets[i]
        if kw:
            assert int(bn.n_big.item()) > 0      # the big-list path is exercised


def test_small_capacity_and_strips_match_reference():
    """Overflowing pair buffer, big-list Gaussians and several strips: still exact."""
    h, w, C = 37, 23, 3
    means, conics, colors = mixed_gaussians(10, h, w, C, seed=5)
    ref = render_reference(means, conics, colors, h, w)
    grad = torch.randn(h, w, C, generator=torch.Generator().manual_seed(2))
    _, gref = _grads(render_reference, means, conics, colors, h, w, grad, "cpu")
    for kw in ({"pair_capacity": 3, "max_tiles": 2}, {"strip_rows": 16}):
        out, g_at = _grads(tb.render, means, conics, colors, h, w, grad, DEV, **kw)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(out > 0, ref > 0)
        _assert_grads_close(g_at, gref)
    _, g_det = _grads(tb.render, means, conics, colors, h, w, grad, DEV,
                      deterministic=True, strip_rows=16)
    _assert_grads_close(g_det, gref)


@pytest.mark.parametrize("kw", [{}, {"max_tiles": 4}])
def test_one_gaussian_covering_every_tile(kw):
    h, w = 64, 48
    means = torch.tensor([[20.0, 30.0]])
    conics = _gauss(400.0, 300.0, 0.2)[None]
    colors = torch.tensor([[0.7, 0.2]])
    bn = tb.bin_gaussians(means.to(DEV), conics.to(DEV), 0, h, w, **kw)
    assert _tile_sets(bn, 1)[0] == set(range(bn.tiles_x * bn.tiles_y))
    ref = render_reference(means, conics, colors, h, w)
    grad = torch.randn(h, w, 2, generator=torch.Generator().manual_seed(4))
    _, gref = _grads(render_reference, means, conics, colors, h, w, grad, "cpu")
    out, gat = _grads(tb.render, means, conics, colors, h, w, grad, DEV, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert (out > 0).all()
    _assert_grads_close(gat, gref)


def test_tile_with_more_gaussians_than_one_batch():
    """More than 256 Gaussians in one tile (GaussianImage's kernel stopped after 256) and far
    more than BATCH: every batch must be summed, forward and backward."""
    n, h, w, C = 300, 16, 20, 3
    from gscodec.render.triton import kernels
    assert n > 256 and n > 2 * max(kernels.BATCH, kernels.BATCH_INTERPRET)
    g = torch.Generator().manual_seed(9)
    means = torch.rand(n, 2, generator=g) * 12.0 + 2.0
    sig = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.5 + 0.4
    conics = conics_from_scale_rot(sig.sort(dim=1, descending=True).values,
                                   torch.rand(n, generator=g, dtype=torch.float64) * 3).float()
    colors = torch.rand(n, C, generator=g) * 0.1
    bn = tb.bin_gaussians(means.to(DEV), conics.to(DEV), 0, h, w)
    assert int((bn.tile_start[1] - bn.tile_start[0]).item()) > 256
    ref = render_reference(means, conics, colors, h, w)
    grad = torch.randn(h, w, C, generator=torch.Generator().manual_seed(3))
    _, gref = _grads(render_reference, means, conics, colors, h, w, grad, "cpu")
    out, gat = _grads(tb.render, means, conics, colors, h, w, grad, DEV)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    _assert_grads_close(gat, gref)


# ---- launches per render -------------------------------------------------------------------

# aten ops that launch no kernel on a GPU (allocation, views, autograd bookkeeping)
_NO_KERNEL = {"detach", "empty", "empty_strided", "view", "_unsafe_view", "alias",
              "as_strided", "slice", "select", "unsqueeze", "expand", "t", "permute",
              "lift_fresh", "_reshape_alias"}


def _device_work(fn, execute=True):
    """Run fn() and return the device work it asked for, in order: the Triton launches
    (through kernels.launch, the backend's one launch path) and the aten ops outside them
    that launch kernels; with execute=False the Triton kernels are counted, not run."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from gscodec.render.triton import kernels
    work, inside = [], [False]
    launch = kernels.launch

    def counting(kernel, grid, *args, **kwargs):
        work.append(kernel.fn.__name__ if hasattr(kernel, "fn") else repr(kernel))
        if execute:
            inside[0] = True
            try:
                launch(kernel, grid, *args, **kwargs)
            finally:
                inside[0] = False

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.name().split("::")[-1].split(".")[0]
            if not inside[0] and name not in _NO_KERNEL:
                work.append("aten." + name)
            return func(*args, **(kwargs or {}))

    kernels.launch = counting
    try:
        with Ops():
            result = fn()
    finally:
        kernels.launch = launch
    return work, result


def test_launches_per_render_at_10k():
    """A render of 10k Gaussians at 768x512 asks for at most 8 kernels: binning (rect,
    cumsum, fill, sort, ranges) and the forward, 6 in all, and no host synchronisation
    (no .item(): the sequence cannot depend on the data). Under the interpreter a 10k render
    takes minutes, so there the Triton kernels are counted without running; a small render,
    run in full, asks for the same sequence."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_raster import random_gaussians as bench_gaussians
    m, q, c = (t.to(DEV) for t in bench_gaussians(10000))
    with torch.no_grad():
        work, _ = _device_work(lambda: tb.render(m, q, c, 512, 768), execute=ON_GPU)
        ms, qs, cs = (t.to(DEV) for t in bench_gaussians(300, 48, 64))
        small, out = _device_work(lambda: tb.render(ms, qs, cs, 64, 48))
    assert len(work) <= 8, work
    assert work == small, (work, small)
    assert not any("_local_scalar_dense" in w or "item" in w for w in work)
    assert work.count("_fwd_kernel") == 1
    torch.testing.assert_close(out.cpu(), render_reference(ms.cpu(), qs.cpu(), cs.cpu(), 64, 48),
                               rtol=1e-5, atol=1e-5)


def test_color_operator_keeps_its_binning():
    """The colour solves' operator bins once: forward is one launch per strip, the adjoint
    (colours only, no re-binning, no full backward) one zeroing and two launches; both equal
    the render and the autograd colour gradient."""
    h, w, C = 37, 23, 3
    means, conics, colors = mixed_gaussians(10, h, w, C, seed=12)
    m, q, c = means.to(DEV), conics.to(DEV), colors.to(DEV)
    op = tb.color_operator(m, q, h, w)
    work, out = _device_work(lambda: op.forward(c))
    assert work == ["_fwd_kernel"]
    torch.testing.assert_close(out.cpu(), render_reference(means, conics, colors, h, w),
                               rtol=1e-5, atol=1e-5)
    v = torch.randn(h, w, C, generator=torch.Generator().manual_seed(1))
    work, adj = _device_work(lambda: op.adjoint(v.to(DEV)))
    assert work == ["aten.zeros", "_bwd_tile_kernel", "_bwd_big_kernel"], work
    _, gref = _grads(render_reference, means, conics, colors, h, w, v, "cpu")
    torch.testing.assert_close(adj.cpu(), gref[2], rtol=1e-4, atol=1e-5)


def test_deterministic_backward_is_bit_identical():
    h, w, C = 37, 23, 3
    means, conics, colors = mixed_gaussians(6, h, w, C, seed=21)
    grad = torch.randn(h, w, C, generator=torch.Generator().manual_seed(5))
    runs = [_grads(tb.render, means, conics, colors, h, w, grad, DEV, deterministic=True)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)


def test_zero_gaussians_and_empty_image():
    for C in (1, 4):
        m = torch.zeros(0, 2, device=DEV, requires_grad=True)
        q = torch.zeros(0, 3, device=DEV, requires_grad=True)
        c = torch.zeros(0, C, device=DEV, requires_grad=True)
        out = tb.render(m, q, c, 5, 7)
        assert out.shape == (5, 7, C) and not out.any()
        gm, gq, gc = torch.autograd.grad(out.sum(), (m, q, c))
        assert gm.shape == (0, 2) and gq.shape == (0, 3) and gc.shape == (0, C)
    m, q, c = mixed_gaussians(3, 4, 4, 2, specials=False)
    assert tb.render(m.to(DEV), q.to(DEV), c.to(DEV), 0, 9).shape == (0, 9, 2)


def test_api_and_errors():
    assert tb.available() == (tb.unavailable_reason() is None)
    assert tb.available()               # under the interpreter, or on the GPU
    from gscodec.render.triton import autograd
    m, q, c = mixed_gaussians(2, 4, 4, 1, specials=False)
    wrong = "cuda" if not ON_GPU else "cpu"
    if ON_GPU:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            autograd.check_device(m)
    with pytest.raises((ValueError, RuntimeError)):
        tb.render(m.to("meta") if wrong == "cuda" else m, q, c, 4, 4)
    with pytest.raises(ValueError):
        tb.render(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 5), 4, 4)


def test_cut_off_comes_from_q_cut():
    """No kernel writes the cut-off as a literal: it is Q_CUT of gscodec/render/common.py."""
    import re

    from gscodec.render.triton import kernels
    src = Path(kernels.__file__).read_text()
    assert not re.search(r"\b12\.0\b", src)
    assert "QCUT = tl.constexpr(Q_CUT)" in src


# ---- exact mode: bit-identical to the CPU kernel ---------------------------------------------

def _cpu(means, conics, colors, h, w):
    from gscodec.render.kernel import render_numpy
    return torch.from_numpy(render_numpy(means.numpy(), conics.numpy(), colors.numpy(), h, w))


def _assert_bits_equal(out, ref):
    assert out.shape == ref.shape and out.dtype == ref.dtype == torch.float32
    diff = (out.view(torch.int32) != ref.view(torch.int32))
    assert not diff.any(), (f"{int(diff.sum())} of {diff.numel()} values differ, max abs "
                            f"{float((out - ref).abs().nan_to_num(0).max())}")


_FAST_EXP_CPP = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
struct Gauss { float mx, my, a, b, c, kx, ky, phase, amp; double det; int i0, i1;
               bool valid; };   // csrc/common.h's
struct RowSpan { int32_t j0, n; int64_t off; };
constexpr int PAD = 8;
inline int padded(int n) { return (n + PAD - 1) / PAD * PAD; }
constexpr float Q_CUT = 12.0f;
#define GSI_NS gsi_test
#include "raster_kernels.h"
int main() {
    unsigned u;
    while (std::scanf("%x", &u) == 1) {
        float x, y;
        std::memcpy(&x, &u, 4);
        y = gsi_test::fast_exp(x);
        std::memcpy(&u, &y, 4);
        std::printf("%08x\n", u);
    }
}
"""


def test_exact_fast_exp_matches_the_cpp_function(tmp_path):
    """The Triton fast_exp against csrc/raster_kernels.h's, compiled here as the extension
    is (-ffp-contract=off), bit for bit over [-100, 100] and beyond."""
    import shutil

    import numpy as np
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the reference fast_exp")
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "fexp.cpp"
    src.write_text(_FAST_EXP_CPP)
    exe = tmp_path / "fexp"
    subprocess.run([cxx, "-O2", "-ffp-contract=off", "-std=c++17", "-I", str(root / "csrc"),
                    str(src), "-o", str(exe)], check=True, capture_output=True)
    rng = np.random.default_rng(0)
    xs = np.concatenate([
        np.linspace(-100.0, 100.0, 40001, dtype=np.float32),
        rng.uniform(-6.0, 0.0, 20000).astype(np.float32),          # the range w uses
        (rng.standard_normal(10000) * 40).astype(np.float32),
        np.array([-87.0, 87.0, np.nextafter(np.float32(-87), np.float32(-88)),
                  np.nextafter(np.float32(87), np.float32(88)), 0.0, -0.0, 1e-30, -1e-30,
                  0.5, -0.5, np.inf, -np.inf, 1e30, -1e30], dtype=np.float32)])
    r = subprocess.run([str(exe)], input="\n".join(f"{u:08x}" for u in xs.view(np.uint32)),
                       capture_output=True, text=True, check=True)
    ref = np.array([int(h, 16) for h in r.stdout.split()], dtype=np.uint32)
    ours = tb.fast_exp(torch.from_numpy(xs).to(DEV)).cpu().numpy().view(np.uint32)
    bad = np.nonzero(ours != ref)[0]
    assert bad.size == 0, [(float(xs[i]), hex(ours[i]), hex(ref[i])) for i in bad[:5]]


@pytest.mark.parametrize("h,w,C", SIZES)
def test_exact_forward_is_bit_identical_to_cpu(h, w, C):
    means, conics, colors = mixed_gaussians(12, h, w, C, seed=h * 100 + w + 1)
    ref = _cpu(means, conics, colors, h, w)
    _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True), ref)
    if (h, w) == (37, 23):   # several strips (the kernel uses absolute rows): same bits
        _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True, strip_rows=16), ref)


def test_exact_near_the_cut_and_signed_colours():
    means, conics = near_cut_gaussians(8, seed=3)
    colors = torch.randn(means.shape[0], 3, generator=torch.Generator().manual_seed(1))
    _assert_bits_equal(_ours(means, conics, colors, 20, 20, exact=True),
                       _cpu(means, conics, colors, 20, 20))


def test_exact_tile_with_more_gaussians_than_one_batch():
    n, h, w, C = 300, 16, 20, 1
    g = torch.Generator().manual_seed(9)
    means = torch.rand(n, 2, generator=g) * 12.0 + 2.0
    sig = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.5 + 0.4
    conics = conics_from_scale_rot(sig.sort(dim=1, descending=True).values,
                                   torch.rand(n, generator=g, dtype=torch.float64) * 3).float()
    colors = torch.rand(n, C, generator=g) * 0.1
    (bn,) = exact_chunks(means.to(DEV), conics.to(DEV), 0, h, w)
    assert int((bn.tile_start[1] - bn.tile_start[0]).item()) > 256
    _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True),
                       _cpu(means, conics, colors, h, w))


def test_exact_binning_every_gaussian_in_pairs_in_index_order():
    """Exact binning: no big list even for a Gaussian covering every tile, and every tile's
    pairs in increasing Gaussian index (the spec's summation order)."""
    h, w = 64, 48
    means, conics, colors = mixed_gaussians(16, h, w, 2, seed=11)
    means = torch.cat([means, torch.tensor([[20.0, 30.0]])])
    conics = torch.cat([conics, _gauss(400.0, 300.0, 0.2)[None]])
    colors = torch.cat([colors, torch.tensor([[0.7, 0.2]])])
    n = means.shape[0]
    (bn,) = exact_chunks(means.to(DEV), conics.to(DEV), 0, h, w)
    assert int(bn.n_big.item()) == 0
    T = bn.tiles_x * bn.tiles_y
    assert bn.pair_gid.numel() == int(bn.count.sum())
    sets = _tile_sets(bn, n)
    assert sets[n - 1] == set(range(T))
    gid, ts = bn.pair_gid.cpu().tolist(), bn.tile_start.cpu().tolist()
    for t in range(T):
        run = gid[ts[t]:ts[t + 1]]
        assert run == sorted(set(run))
    _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True),
                       _cpu(means, conics, colors, h, w))


def test_exact_chunks_give_the_same_bits(monkeypatch):
    """Exact mode with the pairs cut into chunks of consecutive Gaussians (here: at most
    the strip's tile count per chunk, the smallest allowed): the partial sums carry over
    from chunk to chunk, so each pixel still sums in index order: the same bits."""
    from gscodec.render.triton import binning
    h, w, C = 37, 23, 3
    means, conics, colors = mixed_gaussians(30, h, w, C, seed=8)
    ref = _cpu(means, conics, colors, h, w)
    chunks = list(exact_chunks(means.to(DEV), conics.to(DEV), 0, h, w, chunk=1))
    assert len(chunks) > 3
    monkeypatch.setattr(binning, "EXACT_PAIR_CHUNK", 1)
    _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True), ref)
    m, q, c = means.numpy(), conics.numpy(), colors.numpy()
    from gscodec.render import kernel
    assert np.array_equal(tb.render_window(m, q, c, 2, 3, 20, 30),
                          kernel.render_window(m, q, c, 2, 3, 20, 30))


def test_exact_row_spans_of_needles():
    """Long thin Gaussians whose float32 q is <= Q_CUT outside their row spans: the exact
    mode draws them where the CPU kernel does (spec 10.2), bit for bit."""
    h, w = 24, 32
    means, conics, colors = needles(h, w, 2)
    _assert_bits_equal(_ours(means, conics, colors, h, w, exact=True),
                       _cpu(means, conics, colors, h, w))


def test_exact_gradients_route_to_the_normal_backward():
    h, w, C = 16, 12, 2
    means, conics, colors = mixed_gaussians(5, h, w, C, seed=4)
    grad = torch.randn(h, w, C, generator=torch.Generator().manual_seed(6))
    out, g_ex = _grads(tb.render, means, conics, colors, h, w, grad, DEV, exact=True)
    _assert_bits_equal(out, _cpu(means, conics, colors, h, w))
    _, g_ref = _grads(render_reference, means, conics, colors, h, w, grad, "cpu")
    _assert_grads_close(g_ex, g_ref)


def _vector_windows(path):
    """(x0, y0, width, height) windows to decode: the whole image, or for the 16384x16384
    vector (too slow under the interpreter) 40x24 windows around its Gaussians and a 40x520
    one at the top right."""
    import gscodec
    qg = gscodec.read(path)
    if qg.width * qg.height <= 256 * 256 or ON_GPU:
        return qg, [(0, 0, qg.width, qg.height)]
    if path.stem.startswith(("v2_", "v3_", "v4_")):   # the Gaussians of extreme_la_16384
        return qg, [(qg.width - 40, 0, 40, 24)]
    means = qg.render_inputs()[0]
    wins = []
    for mx, my in means.tolist():
        x0 = int(min(max(mx - 20, 0), qg.width - 40))
        y0 = int(min(max(my - 12, 0), qg.height - 24))
        wins.append((x0, y0, 40, 24))
    wins.append((qg.width - 40, 0, 40, 520))     # two of the decoder's strips
    return qg, sorted(set(wins))


# (files with waves, format v5, are left out: the Triton backend draws no waves yet and
# the decoder renders them with the numpy renderer, tests/test_waves.py)
VECTORS = sorted(p for p in (Path(__file__).resolve().parent / "vectors").glob("*.gsi")
                 if not p.stem.startswith("waves_"))


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_exact_decode_of_the_vectors_equals_the_cpu_decode(path):
    """The decoder's GPU path (render_window: per strip, means - (x0, y0 + r0) in float32,
    the exact kernel writing 8-bit pixels) gives the CPU decode's bytes; and each strip's
    float32 image is the CPU kernel's bit for bit."""
    import gscodec
    from gscodec.render import kernel, strips
    qg, wins = _vector_windows(path)
    means, conics, colors = qg.render_inputs()
    for x0, y0, cw, ch in wins:
        ref = gscodec.decode(path, device="cpu", crop=(x0, y0, cw, ch))
        out = tb.render_window(means, conics, colors, x0, y0, cw, ch)
        out = out[:, :, 0] if qg.channels == 1 else out
        assert out.shape == ref.shape
        assert np.array_equal(out, ref), (path.name, (x0, y0, cw, ch), int((out != ref).sum()))
        assert np.array_equal(kernel.render_window(means, conics, colors, x0, y0, cw, ch)
                              .reshape(ref.shape), ref)
        if cw * ch > 64 * 64:
            continue                  # (the float32 check is a second render: small ones)
        for r0, rows in strips(ch):
            mm = torch.from_numpy(means - np.array([x0, y0 + r0], dtype=np.float32))
            q, c = torch.from_numpy(conics), torch.from_numpy(colors)
            img = tb.render(mm.to(DEV), q.to(DEV), c.to(DEV), rows, cw, exact=True).cpu()
            _assert_bits_equal(img, _cpu(mm, q, c, rows, cw))


if _FALLBACK:
    # triton was imported before this module could select its interpreter: run the tests
    # above in a fresh interpreter process instead of in this one.
    for _name in [n for n in globals() if n.startswith("test_")]:
        del globals()[_name]

    def test_triton_backend_in_subprocess():
        root = Path(__file__).resolve().parents[1]
        env = dict(os.environ, TRITON_INTERPRET="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(Path(__file__).resolve())], cwd=root, env=env,
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_fit_through_the_cuda_backend():
    """The encoder's whole fit (start, Adam with refinement, colour solves, the
    quantization-aware phase, finish) with backend "cuda": on the GPU with
    GSCODEC_TEST_CUDA=1, else the same Triton kernels under the interpreter. It must reach
    the quality of the CPU backend's fit of the same image (different float rounding)."""
    import numpy as np

    from gscodec.encoder.fit import FitConfig, Fitter
    from gscodec.render import render as render_any

    y, x = np.mgrid[0:12, 0:16]
    img = np.stack([x * 15, y * 20, (x + y) * 8], -1).astype(np.uint8)
    psnr = {}
    for backend in ("triton", "kernel"):
        cfg = FitConfig(iterations=12, qat_iterations=3, color_solve_steps=3, backend=backend,
                        refine_at=(0.5,))
        f = Fitter(img, cfg)
        assert f.device.type == ("cuda" if backend == "triton" and ON_GPU else "cpu")
        qg = f.fit(20)
        assert qg.count == 20
        means, conics, colors = (torch.from_numpy(a) for a in qg.render_inputs())
        out = render_any(means, conics, colors, 12, 16, backend="kernel").clamp(0, 1)
        mse = float(((out * 255 - torch.from_numpy(img).float()) ** 2).mean())
        psnr[backend] = 10 * math.log10(255 ** 2 / mse)
    # Measured: cuda (interpreter) and cpu within 0.3 dB of each other at about 30 dB.
    assert psnr["triton"] > 20 and abs(psnr["triton"] - psnr["kernel"]) < 3.0, psnr


@pytest.mark.parametrize("name", ["rgb_16x12_20", "rgba_masked_10x7", "single_gray_1x1",
                                  "gi_rgb_12x8_7", "classes_rgb_24x16_30"])
def test_decoder_device_cuda_gives_the_cpu_pixels(name):
    """gscodec.decode(..., device="cuda") goes through the decoder's own GPU path
    (render_window of the Triton backend) and gives the CPU decode's bytes, also
    scaled/cropped."""
    import numpy as np

    import gscodec
    path = Path(__file__).resolve().parent / "vectors" / f"{name}.gsi"
    for kw in ({}, {"scale": 1.7}, {"scale": 3.0, "crop": (1, 1, 2, 2)}):
        cpu = gscodec.decode(path, device="cpu", **kw)
        gpu = gscodec.decode(path, device="cuda", **kw)
        assert gpu.dtype == np.uint8 and np.array_equal(gpu, cpu), (name, kw)
