"""Tests of the rendering backends against the contract in gscodec.render."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import gscodec.render as R
from gscodec.bitstream.model import conics_from_scale_rot
from gscodec.render import (Q_CUT, render, render_reference, to_uint8, to_uint8_numpy,
                            transform_for_view)
from gscodec.render import kernel as cpu_backend


def _cpu_or_skip():
    if not cpu_backend.kernel_available():
        pytest.skip(f"compiled CPU kernel unavailable: {cpu_backend.unavailable_reason()}")


def random_gaussians(n, height, width, channels=3, seed=0, smin=0.3, smax=30.0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([float(width), float(height)])
    log_sig = torch.empty(n, 2, dtype=torch.float64).uniform_(
        math.log(smin), math.log(smax), generator=g)
    sigma = torch.exp(log_sig).sort(dim=1, descending=True).values
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    conics = conics_from_scale_rot(sigma, theta).float()
    colors = torch.rand(n, channels, generator=g) * 0.3
    return means, conics, colors


def degenerate_gaussians(height, width, channels, seed=1):
    """A mix of hard cases: very thin, enormous, far off the image, non-PD, on the border."""
    g = torch.Generator().manual_seed(seed)
    m, q, c = [], [], []

    def add(mean, sigma, theta, color=None):
        m.append(torch.tensor(mean, dtype=torch.float32))
        q.append(conics_from_scale_rot(torch.tensor([sigma], dtype=torch.float64),
                                       torch.tensor([theta], dtype=torch.float64))[0].float())
        c.append(torch.rand(channels, generator=g) * 0.3 if color is None
                 else torch.tensor(color, dtype=torch.float32))

    for k in range(6):  # very thin at various angles
        add([width * (k + 0.5) / 6, height / 2], [20.0, 0.05], k * math.pi / 6)
    add([width / 2, height / 2], [1e4, 5e3], 0.3)                 # covers everything
    add([-3e4, height / 2], [2e4, 2e4], 0.0)                        # huge, centred far off
    add([1e7, -1e7], [3.0, 2.0], 0.1)                               # far off the image
    add([-40.0, -40.0], [10.0, 10.0], 0.0)                          # just off a corner
    add([0.0, 0.0], [2.0, 1.0], 0.7)                                # on a corner
    add([width, height], [0.125, 0.125], 0.0)                       # tiny on a corner
    add([width * 0.3, height * 0.7], [0.125, 0.125], 0.0)           # sub-pixel
    add([width * 0.5, height * 0.5], [3.0e4, 0.2], 1.1)             # long and thin
    means = torch.stack(m)
    conics = torch.stack(q)
    colors = torch.stack(c)
    # Non positive-definite conics: must contribute nothing.
    bad_q = torch.tensor([[-1.0, 0.0, 1.0], [1.0, 2.0, 1.0], [0.0, 0.0, 0.0],
                          [1.0, 0.0, -1.0], [1.0, 1.0, 1.0]])
    bad_m = torch.tensor([[width / 2, height / 2]]).repeat(5, 1)
    bad_c = torch.ones(5, channels)
    return (torch.cat([means, bad_m]), torch.cat([conics, bad_q]), torch.cat([colors, bad_c]))


def brute_force(means, conics, colors, height, width):
    """Dense evaluation of the contract (float32, same q evaluation order), no culling."""
    py, px = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    out = torch.zeros(height, width, colors.shape[1])
    for k in range(means.shape[0]):
        a, b, c = conics[k]
        if not (a > 0 and a * c - b * b > 0):
            continue
        dx = px - means[k, 0]
        dy = py - means[k, 1]
        q = (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy
        w = torch.where(q <= Q_CUT, torch.exp(-0.5 * q), torch.zeros_like(q))
        out += w[..., None] * colors[k]
    return out


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


def _case(n, h, w, ch, seed):
    means, conics, colors = random_gaussians(n, h, w, ch, seed=seed)
    dm, dq, dc = degenerate_gaussians(h, w, ch, seed=seed + 100)
    return torch.cat([means, dm]), torch.cat([conics, dq]), torch.cat([colors, dc])


@pytest.mark.parametrize("case", CASES)
def test_cpu_matches_reference(case):
    _cpu_or_skip()
    n, h, w, ch, seed = case
    means, conics, colors = _case(n, h, w, ch, seed)
    params = [t.clone().requires_grad_(True) for t in (means, conics, colors)]
    out = render(*params, h, w, backend="cpu")
    params_ref = [t.clone().requires_grad_(True) for t in (means, conics, colors)]
    ref = render_reference(*params_ref, h, w)
    assert out.shape == ref.shape == (h, w, ch) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max().item() <= 1e-5
    g = torch.randn(h, w, ch, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad(out, params, g)
    grads_ref = torch.autograd.grad(ref, params_ref, g)
    for name, x, y in zip(("means", "conics", "colors"), grads, grads_ref):
        assert torch.isfinite(x).all(), name
        assert rel_err(x, y) <= 1e-4, (name, rel_err(x, y))
    # Non-PD Gaussians (the last five) get exactly zero gradient.
    for x in grads:
        assert (x[-5:] == 0).all()


def test_cpu_empty_and_all_invalid():
    _cpu_or_skip()
    z = render(torch.zeros(0, 2), torch.zeros(0, 3), torch.zeros(0, 3), 4, 5, backend="cpu")
    assert z.shape == (4, 5, 3) and (z == 0).all()
    means = torch.tensor([[2.0, 2.0]], requires_grad=True)
    conics = torch.tensor([[-1.0, 0.0, 1.0]], requires_grad=True)
    colors = torch.tensor([[1.0]], requires_grad=True)
    img = render(means, conics, colors, 4, 4, backend="cpu")
    assert (img == 0).all()
    img.sum().backward()
    assert (means.grad == 0).all() and (conics.grad == 0).all() and (colors.grad == 0).all()


def test_cpu_realistic_image():
    """Fitted-image statistics at a moderate size, including huge extents in x."""
    _cpu_or_skip()
    h, w = 96, 128
    means, conics, colors = random_gaussians(2000, h, w, 3, seed=11, smin=0.2, smax=8)
    out = render(means, conics, colors, h, w, backend="cpu")
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

    monkeypatch.setattr(cpu_backend, "kernel", lambda: Spy())
    means, conics, colors = random_gaussians(20, 9, 11, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        render(means, conics, colors, 9, 11, backend="cpu")
        means.requires_grad_(True)
        render(means, conics, colors, 9, 11, backend="cpu").sum().backward()
    finally:
        torch.set_num_threads(old)
    assert seen == [("forward", 1), ("plan", 1), ("plan.forward", 1), ("plan.backward", 1)]


# ---- dispatch and helpers -------------------------------------------------------------------

def test_backends_and_dispatch():
    assert "reference" in R.available_backends()
    means, conics, colors = random_gaussians(20, 9, 11, 3)
    ref = render(means, conics, colors, 9, 11, backend="reference")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = render(means, conics, colors, 9, 11)
    assert (auto - ref).abs().max().item() <= 1e-5
    with pytest.raises(ValueError):
        render(means, conics, colors, 9, 11, backend="nope")


def test_auto_fallback_warns_once(monkeypatch):
    monkeypatch.setitem(R._BACKENDS, "cpu", (lambda: False, lambda: "no compiler (test)",
                                             R._BACKENDS["cpu"][2]))
    monkeypatch.setattr(R, "_cpu_reason", lambda: "no compiler (test)")
    monkeypatch.setattr(R, "_warned_fallback", False)
    means, conics, colors = random_gaussians(3, 4, 4, 1)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        render(means, conics, colors, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render(means, conics, colors, 4, 4)   # no second warning
    with pytest.raises(RuntimeError):
        render(means, conics, colors, 4, 4, backend="cpu")


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
