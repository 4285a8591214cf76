"""Tests of the rendering backends against the contract in gscodec.render."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import gscodec.render as R
from gscodec.render import kernel as cpu_backend
from gscodec.render import render, render_reference, to_uint8, to_uint8_numpy, transform_for_view

from render_cases import brute_force, case, degenerate_gaussians, random_gaussians


def _cpu_or_skip():
    if not cpu_backend.kernel_available():
        pytest.skip(f"compiled CPU kernel unavailable: {cpu_backend.unavailable_reason()}")


def rel_err(x, y):
    scale = y.abs().max().item()
    return (x - y).abs().max().item() / max(scale, 1e-30)


# ---- reference ----------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (23, 37), (40, 70)])
def test_reference_matches_brute_force(hw):
    h, w = hw
    means, conics, colors = random_gaussians(40, h, w, channels=3, seed=3, smax=15)
    dm, dq, dc = degenerate_gaussians(h, w, 3)
    means, conics, colors = torch.cat([means, dm]), torch.cat([conics, dq]), torch.cat([colors, dc])
    ref = render_reference(means, conics, colors, h, w)
    brute = brute_force(means, conics, colors, h, w)
    assert ref.shape == (h, w, 3) and ref.dtype == torch.float32
    assert torch.allclose(ref, brute, atol=1e-5, rtol=1e-5)


def test_reference_cutoff_and_non_pd():
    # One Gaussian exactly at a pixel centre, unit covariance: q = dx^2 + dy^2.
    means = torch.tensor([[5.5, 5.5], [5.5, 5.5]])
    conics = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])   # second is not PD
    colors = torch.tensor([[1.0], [100.0]])
    img = render_reference(means, conics, colors, 11, 11)[..., 0]
    assert img[5, 5].item() == pytest.approx(1.0)
    assert img[5, 8].item() == pytest.approx(math.exp(-4.5), rel=1e-6)   # q = 9 <= 12
    assert img[5, 9].item() == 0.0                                      # q = 16 > 12
    assert img[7, 7].item() == pytest.approx(math.exp(-4.0), rel=1e-6)   # q = 8
    assert img[8, 7].item() == 0.0                                      # q = 13


def test_reference_gradcheck_float64():
    means, conics, colors = random_gaussians(3, 3, 4, channels=2, seed=5, smin=0.8, smax=3)
    args = [t.double().requires_grad_(True) for t in (means, conics, colors)]
    assert torch.autograd.gradcheck(lambda m, q, c: render_reference(m, q, c, 3, 4), args,
                                     eps=1e-6, atol=1e-6, rtol=1e-4)


# ---- compiled CPU kernel vs reference -------------------------------------------------------

CASES = [  # (n random, height, width, channels, seed)
    (200, 37, 23, 3, 0),
    (300, 64, 96, 1, 1),
    (150, 50, 70, 4, 2),
    (80, 45, 33, 2, 3),
    (5, 1, 1, 3, 4),
    (10, 1, 7, 4, 5),
    (10, 7, 1, 1, 6),
]


@pytest.mark.parametrize("params", CASES)
def test_cpu_matches_reference(params):
    _cpu_or_skip()
    n, h, w, ch, seed = params
    means, conics, colors = case(n, h, w, ch, seed)
    params = [t.clone().requires_grad_(True) for t in (means, conics, colors)]
    out = render(*params, h, w, backend="kernel")
    params_ref = [t.clone().requires_grad_(True) for t in (means, conics, colors)]
    ref = render_reference(*params_ref, h, w)
    assert out.shape == ref.shape == (h, w, ch) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max().item() <= 1e-5
    g = torch.randn(h, w, ch, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad(out, params, g)
    grads_ref = torch.autograd.grad(ref, params_ref, g)
    for name, x, y in zip(("means", "conics", "colors"), grads, grads_ref, strict=True):
        assert torch.isfinite(x).all(), name
        assert rel_err(x, y) <= 1e-4, (name, rel_err(x, y))
    # Non-PD Gaussians (the last five) get exactly zero gradient.
    for x in grads:
        assert (x[-5:] == 0).all()


def test_cpu_empty_and_all_invalid():
    _cpu_or_skip()
    z = render(torch.zeros(0, 2), torch.zeros(0, 3), torch.zeros(0, 3), 4, 5, backend="kernel")
    assert z.shape == (4, 5, 3) and (z == 0).all()
    means = torch.tensor([[2.0, 2.0]], requires_grad=True)
    conics = torch.tensor([[-1.0, 0.0, 1.0]], requires_grad=True)
    colors = torch.tensor([[1.0]], requires_grad=True)
    img = render(means, conics, colors, 4, 4, backend="kernel")
    assert (img == 0).all()
    img.sum().backward()
    assert (means.grad == 0).all() and (conics.grad == 0).all() and (colors.grad == 0).all()


def test_cpu_realistic_image():
    """Fitted-image statistics at a moderate size, including huge extents in x."""
    _cpu_or_skip()
    h, w = 96, 128
    means, conics, colors = random_gaussians(2000, h, w, 3, seed=11, smin=0.2, smax=8)
    out = render(means, conics, colors, h, w, backend="kernel")
    ref = render_reference(means, conics, colors, h, w)
    assert (out - ref).abs().max().item() <= 1e-5


def test_fast_exp_accuracy():
    _cpu_or_skip()
    ext = cpu_backend.kernel()
    assert ext.fast_exp_max_rel_error(-87.0, 10.0, 200000) < 1e-6
    assert ext.fast_exp_max_rel_error(-6.5, 0.5, 200000) < 1e-6


def test_numpy_fast_exp_accuracy():
    import numpy as np

    from gscodec.render.numpy_reference import fast_exp
    x = np.linspace(-87.0, 10.0, 200001, dtype=np.float32)
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(fast_exp(x).astype(np.float64) - ref) / ref).max() < 1e-6


def test_cpu_uses_torch_threads(monkeypatch):
    """The torch backend runs the kernel on torch.get_num_threads() threads: the plan of a
    differentiable render, its forward and backward, and the plain forward without grad."""
    _cpu_or_skip()
    ext = cpu_backend.kernel()
    seen = []

    class SpyPlan:
        def __init__(self, m, q, h, w, nt, max_weights):
            seen.append(("plan", nt))
            self.plan = ext.Plan(m, q, h, w, nt, max_weights)

        def forward(self, c, nt):
            seen.append(("plan.forward", nt))
            return self.plan.forward(c, nt)

        def backward(self, c, g, nt):
            seen.append(("plan.backward", nt))
            return self.plan.backward(c, g, nt)

    class Spy:
        Plan = SpyPlan

        def forward(self, *args):
            seen.append(("forward", args[-1]))
            return ext.forward(*args)

    from gscodec.render import extension  # where the torch backend reaches the kernel
    monkeypatch.setattr(extension, "kernel", lambda: Spy())
    means, conics, colors = random_gaussians(20, 9, 11, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        render(means, conics, colors, 9, 11, backend="kernel")
        means.requires_grad_(True)
        render(means, conics, colors, 9, 11, backend="kernel").sum().backward()
    finally:
        torch.set_num_threads(old)
    assert seen == [("forward", 1), ("plan", 1), ("plan.forward", 1), ("plan.backward", 1)]


# ---- dispatch and helpers -------------------------------------------------------------------

def test_backends_and_dispatch():
    assert "torch_reference" in R.available_backends()
    assert "numpy_reference" in R.available_backends("window")
    means, conics, colors = random_gaussians(20, 9, 11, 3)
    ref = render(means, conics, colors, 9, 11, backend="torch_reference")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = render(means, conics, colors, 9, 11)
    assert (auto - ref).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="unknown render backend"):
        render(means, conics, colors, 9, 11, backend="nope")
    with pytest.raises(ValueError, match="unknown render backend"):   # not differentiable
        render(means, conics, colors, 9, 11, backend="numpy_reference")
    # "auto" is resolved in one place: CUDA data -> triton, else the kernel or its fallback
    for kind in ("differentiable", "window"):
        try:
            assert R.choose("auto", kind=kind, on_cuda=True) == "triton"
        except RuntimeError as exc:            # no GPU and no interpreter in this process
            assert "'triton' unavailable" in str(exc)
    want = "kernel" if cpu_backend.kernel_available() else "torch_reference"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert R.resolve_backend("auto", means) == want


def test_every_backend_exposes_the_surface():
    """The registry's surface (gscodec.render.backends): every module answers availability,
    and implements render/color_operator and render_window as its entry says."""
    from gscodec.render import backends
    for name, entry in backends.BACKENDS.items():
        mod = backends.module(name)
        assert callable(mod.available) and callable(mod.unavailable_reason), name
        for fn, needed in (("render", entry.differentiable),
                           ("color_operator", entry.differentiable),
                           ("render_window", entry.window)):
            assert callable(getattr(mod, fn, None)) or not needed, (name, fn)


def test_availability_is_asked_once(monkeypatch):
    """No availability check per render call: the registry asks a backend once."""
    from gscodec.render import backends, torch_reference
    calls = []
    monkeypatch.setattr(torch_reference, "unavailable_reason",
                        lambda: calls.append(1) or None)
    backends.refresh()
    try:
        means, conics, colors = random_gaussians(3, 4, 4, 1)
        for _ in range(3):
            render(means, conics, colors, 4, 4, backend="torch_reference")
        assert len(calls) == 1
    finally:
        monkeypatch.undo()
        backends.refresh()


def test_auto_fallback_warns_once(monkeypatch):
    from gscodec.render import backends
    monkeypatch.setattr(cpu_backend, "unavailable_reason", lambda: "no compiler (test)")
    monkeypatch.setattr(backends, "_warned", set())
    backends.refresh()
    try:
        means, conics, colors = random_gaussians(3, 4, 4, 1)
        with pytest.warns(RuntimeWarning, match="no compiler"):
            render(means, conics, colors, 4, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            render(means, conics, colors, 4, 4)   # no second warning
        with pytest.raises(RuntimeError, match="unavailable"):
            render(means, conics, colors, 4, 4, backend="kernel")
    finally:
        monkeypatch.undo()
        backends.refresh()


def test_to_uint8():
    v = torch.tensor([-1.0, 0.0, 0.5 / 255, 0.49 / 255, 1.0, 2.0, 0.5, float("nan")])
    assert to_uint8(v).tolist() == [0, 0, 1, 0, 255, 255, 128, 0]
    assert to_uint8(v).dtype == torch.uint8
    assert to_uint8_numpy(v.numpy()).tolist() == to_uint8(v).tolist()
    assert to_uint8_numpy(v.numpy()).dtype.name == "uint8"
    w = torch.randn(1000, dtype=torch.float64) * 0.7 + 0.5
    w[::7] = torch.tensor([float("inf"), -float("inf"), 1e30, -1e30] * 36)[: w[::7].numel()]
    assert to_uint8_numpy(w.numpy()).tolist() == to_uint8(w).tolist()


def test_transform_for_view():
    means = torch.tensor([[10.0, 20.0]])
    conics = torch.tensor([[1.0, 0.5, 2.0]])
    m, q = transform_for_view(means, conics, scale=2.0, offset=(3.0, 4.0))
    assert m.tolist() == [[17.0, 36.0]]
    assert q.tolist() == [[0.25, 0.125, 0.5]]
    # Rendering a 2x view equals the 1x Gaussian sampled at the scaled pixel centres.
    m1, q1 = transform_for_view(means, conics)
    assert torch.equal(m1, means) and torch.equal(q1, conics)
    mn, qn = transform_for_view(means.numpy(), conics.numpy(), scale=2.0, offset=(3.0, 4.0))
    assert mn.dtype == means.numpy().dtype and mn.tolist() == m.tolist()
    assert qn.tolist() == q.tolist()
