"""Waves (format version 5) in the compiled CPU kernel.

- The exact forward (the decoder's) draws w = e * (1 + amp * cos_gsi((kx*dx + ky*dy) + phase))
  bit for bit as spec section 10 writes it: checked against `exact_render`, a numpy
  transcription of the spec (every operation a float32 numpy operation, so rounded, never
  fused), on random sets, C = 1..4, both ISAs, 1 and 2 threads, and on the inputs of scaled
  and cropped views. amp == 0 is no wave, bit for bit.
- The fitting kernel (FitPlan with waves) is not exact: a cheaper sin and cos, and a rotation
  along each row. Bounds (max deviation relative to the largest value of the array; measured
  2026-12-06 on these cases, both ISAs, 1 and 2 threads): forward against the exact forward
  3.2e-6; loss against float64 autograd 1.3e-6, gradients 3.4e-5 (the waves', C = 1), the
  others 1.4e-5; colour-only passes 1.2e-6. Bounds are about 10x the measured.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gscodec.bitstream.model import conics_from_scale_rot
from gscodec.render import kernel
from gscodec.render.common import Q_CUT
from gscodec.render.numpy_reference import fast_exp

FORWARD = 3e-5      # FitPlan's forward against the exact forward (measured 3.2e-6)
LOSS = 1e-5         # the loss against float64 autograd (measured 1.3e-6)
GRAD = 3e-4         # gradients against float64 autograd (measured 3.4e-5)
COLOUR = 1e-5       # colour-only passes against each other (measured 1.2e-6)

CASES = [  # (n, height, width, channels, seed)
    (120, 37, 23, 3, 0), (200, 64, 96, 1, 1), (90, 50, 70, 4, 2), (60, 45, 33, 2, 3),
    (5, 1, 1, 3, 4), (250, 100, 120, 3, 7)]

_f = np.float32




# ---- the spec's arithmetic in numpy (float32 operation by operation) ------------------------

INV_PI, PI_HI, PI_LO = _f(1 / math.pi), _f(3.140625), _f(math.pi - 3.140625)
COS_C = [_f((-1) ** j / math.factorial(2 * j)) for j in range(7)]


def cos_gsi(x) -> np.ndarray:
    """cos_gsi of spec section 10."""
    with np.errstate(invalid="ignore"):
        x = np.asarray(x, np.float32)
        x = np.where(x < _f(-4194304.0), _f(-4194304.0), x).astype(np.float32)
        x = np.where(x > _f(4194304.0), _f(4194304.0), x).astype(np.float32)
        t = x * INV_PI
        n = (t + _f(12582912.0)) - _f(12582912.0)
        r = x - n * PI_HI
        r = r - n * PI_LO
        r2 = r * r
        p = np.full_like(r, COS_C[6])
        for c in COS_C[5::-1]:
            p = p * r2 + c
        odd = (np.nan_to_num(n).astype(np.int64) & 1) == 1
        return np.where(odd, -p, p).astype(np.float32)


def exact_render(m, q, c, waves, h, w) -> np.ndarray:
    """The contract with spec section 10's waves, Gaussian by Gaussian in index order (the
    kernel's order of summation at every pixel), over the whole image (the q <= Q_CUT test
    decides where each contributes)."""
    out = np.zeros((h, w, c.shape[1]), np.float32)
    px = (np.arange(w, dtype=np.float32) + _f(0.5))[None, :]
    py = (np.arange(h, dtype=np.float32) + _f(0.5))[:, None]
    for k in range(len(m)):
        a, b, cc = q[k]
        wave = None if waves is None or waves[k, 3] == 0 else waves[k]
        if not (np.isfinite(m[k]).all() and np.isfinite(q[k]).all()) \
                or not (a > 0 and a * cc - b * b > 0) \
                or (wave is not None and not np.isfinite(wave).all()):
            continue
        dx, dy = px - m[k, 0], py - m[k, 1]
        qq = (a * dx + (_f(2.0) * b) * dy) * dx + (cc * dy) * dy
        e = fast_exp(_f(-0.5) * qq)
        if wave is not None:
            kx, ky, phase, amp = wave
            arg = (kx * dx + ky * dy) + phase
            t = amp * cos_gsi(arg)
            t = _f(1.0) + t
            e = e * t
        e[~(qq <= _f(Q_CUT))] = _f(0.0)
        out += e[:, :, None] * c[k][None, None, :]
    return out


# ---- inputs ----------------------------------------------------------------------------------

def gaussians(n, h, w, ch, seed):
    """Random Gaussians (sigma 0.3 to 30 px) with waves on about 60 % of them (|k| up to 3
    radians per pixel, phases in [-7, 7], amplitudes in [-1.5, 1.5]); the others have a
    wave vector but amp 0, as a fit's switched-off waves."""
    rng = np.random.default_rng(seed)
    m = (rng.uniform(0, 1, (n, 2)) * [w, h]).astype(np.float32)
    sigma = np.sort(np.exp(rng.uniform(math.log(0.3), math.log(30), (n, 2))), axis=1)[:, ::-1]
    theta = rng.uniform(0, math.pi, n)
    q = conics_from_scale_rot(torch.from_numpy(sigma.copy()),
                              torch.from_numpy(theta)).float().numpy()
    c = rng.uniform(0, 0.3, (n, ch)).astype(np.float32)
    k, phi = rng.uniform(0.05, 3.0, n), rng.uniform(0, 2 * math.pi, n)
    waves = np.stack([k * np.cos(phi), k * np.sin(phi), rng.uniform(-7, 7, n),
                      rng.uniform(-1.5, 1.5, n)], 1).astype(np.float32)
    waves[rng.uniform(0, 1, n) > 0.6, 3] = 0.0
    return m, q, c, waves


def images(h, w, ch, seed):
    rng = np.random.default_rng(seed + 50)
    return (rng.uniform(0, 1, (h, w, ch)).astype(np.float32),
            (rng.uniform(0, 1, (h, w)) > 0.3).astype(np.float32),
            rng.standard_normal((h, w, ch)).astype(np.float32))


def view(m, q, waves, scale, offset):
    """The inputs of a view at `scale` cropped at `offset`: means * s - offset, conics / s^2,
    wave vectors / f32(s) (spec section 10), in float32."""
    s = _f(scale)
    m2 = m * s - np.asarray(offset, np.float32)
    w2 = waves.copy()
    w2[:, :2] = waves[:, :2] / s
    return m2.astype(np.float32), (q / _f(scale * scale)).astype(np.float32), w2


def rel(x, y) -> float:
    return float(np.abs(x - y).max() / max(float(np.abs(y).max()), 1e-30)) if y.size else 0.0


# ---- the exact forward -----------------------------------------------------------------------

def test_cos_gsi_is_the_specs(ext, isa):
    x = np.concatenate([np.linspace(-100, 100, 400001, dtype=np.float32),
                        np.float32([0.0, -0.0, math.pi, -math.pi / 2, 1e-30, 4194303.5,
                                    4194304.0, 4194305.0, -5e6, 1e30, -1e30, np.inf,
                                    -np.inf])])
    mine, spec = ext.cos_gsi(x), cos_gsi(x)
    assert np.array_equal(mine.view(np.uint32), spec.view(np.uint32))
    assert np.isnan(ext.cos_gsi(np.float32([np.nan]))).all()
    # within 1.8e-7 of cos over [-80, 80] (spec section 10)
    inner = np.abs(x) <= 80
    assert np.abs(mine[inner].astype(np.float64) - np.cos(x[inner].astype(np.float64))).max() \
        < 1.8e-7


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("nt", [1, 2])
def test_exact_forward_with_waves_is_the_specs(ext, isa, case, nt):
    n, h, w, ch, seed = case
    m, q, c, waves = gaussians(n, h, w, ch, seed)
    out = ext.forward(m, q, c, h, w, nt, waves)
    assert out.dtype == np.float32 and out.shape == (h, w, ch)
    assert np.array_equal(out, exact_render(m, q, c, waves, h, w))


@pytest.mark.parametrize("scale, offset", [(0.5, (0.0, 0.0)), (2.0, (10.0, 7.0)),
                                           (0.37, (-3.5, 2.25)), (3.0, (150.0, 90.0))])
def test_exact_forward_of_scaled_and_cropped_views(ext, isa, scale, offset):
    m, q, c, waves = gaussians(150, 60, 80, 3, 11)
    m, q, waves = view(m, q, waves, scale, offset)
    h, w = 41, 53
    for nt in (1, 2):
        assert np.array_equal(ext.forward(m, q, c, h, w, nt, waves),
                              exact_render(m, q, c, waves, h, w))


def test_the_numpy_renderer_draws_the_same_waves(ext, isa):
    """The decoder's numpy renderer (numpy_reference) draws the same bits with waves."""
    from gscodec.render import numpy_reference as nr
    m, q, c, waves = gaussians(200, 48, 64, 3, 12)
    assert np.array_equal(ext.forward(m, q, c, 48, 64, 2, waves),
                          nr.render_numpy_ref(m, q, c, 48, 64, waves))


def test_amp_zero_is_no_wave_bit_for_bit(ext, isa):
    m, q, c, waves = gaussians(300, 70, 90, 3, 5)
    plain = ext.forward(m, q, c, 70, 90, 2)
    off = waves.copy()
    off[:, 3] = 0.0
    assert np.array_equal(ext.forward(m, q, c, 70, 90, 2, off), plain)
    off[:, 3] = -0.0
    assert np.array_equal(ext.forward(m, q, c, 70, 90, 1, off), plain)
    assert np.array_equal(ext.forward(m, q, c, 70, 90, 1, None), plain)
    assert not np.array_equal(ext.forward(m, q, c, 70, 90, 1, waves), plain)


def test_non_finite_waves(ext, isa):
    """A wave with amp != 0 that is not finite: the Gaussian contributes nothing; amp 0:
    no wave (spec section 10)."""
    m, q, c, waves = gaussians(40, 30, 40, 3, 6)
    waves[:, 3] = 0.5
    bad = waves.copy()
    bad[0, 0] = np.nan
    bad[1, 2] = np.inf
    bad[2, 3] = np.nan
    keep = np.ones(len(m), bool)
    keep[:3] = False
    ref = ext.forward(m[keep], q[keep], c[keep], 30, 40, 1, waves[keep])
    assert np.array_equal(ext.forward(m, q, c, 30, 40, 1, bad), ref)
    bad[:3, 3] = 0.0
    bad[2, 0] = np.nan
    nowave = waves.copy()
    nowave[:3, 3] = 0.0
    assert np.array_equal(ext.forward(m, q, c, 30, 40, 1, bad),
                          ext.forward(m, q, c, 30, 40, 1, nowave))


def test_bad_waves_arguments(ext):
    m, q, c, waves = gaussians(5, 12, 16, 3, 0)
    with pytest.raises(ValueError, match="waves must be"):
        ext.forward(m, q, c, 12, 16, 1, waves[:4])
    with pytest.raises(ValueError, match="waves must be"):
        ext.FitPlan(m, q, 12, 16, 1, waves[:, :3].copy())
    with pytest.raises(ValueError, match="waves must be float32"):
        ext.forward(m, q, c, 12, 16, 1, waves.astype(np.float64))
    with pytest.raises(ValueError, match="bad shape: waves"):
        kernel.render_numpy(m, q, c, 12, 16, waves=waves[:, :2])


def test_render_numpy_draws_waves_with_the_kernel(ext):
    m, q, c, waves = gaussians(80, 30, 40, 3, 9)
    out = kernel.render_numpy(m.astype(np.float64), q, c, 30, 40, waves=waves.tolist())
    assert np.array_equal(out, exact_render(m, q, c, waves, 30, 40))
    assert np.array_equal(kernel.render_numpy(m, q, c, 30, 40, waves=None),
                          kernel.render_numpy(m, q, c, 30, 40))


# ---- the fitting kernel ----------------------------------------------------------------------

def reference_loss(m, q, c, waves, h, w, target, weight, scale, grad_out=None):
    """float64 autograd of scale * sum((weight * render - target)^2) (or, with grad_out, of
    sum(render * grad_out)), the cut-off decided on the contract's float32 q: (value,
    gradients of means, conics, colours, waves)."""
    px = (np.arange(w, dtype=np.float32) + _f(0.5))[None, None, :]
    py = (np.arange(h, dtype=np.float32) + _f(0.5))[None, :, None]
    dx32, dy32 = px - m[:, 0, None, None], py - m[:, 1, None, None]
    a, b, cc = (q[:, j, None, None] for j in range(3))
    q32 = (a * dx32 + (_f(2.0) * b) * dy32) * dx32 + (cc * dy32) * dy32
    pd = (q[:, 0] > 0) & (q[:, 0] * q[:, 2] - q[:, 1] * q[:, 1] > 0)
    keep = torch.from_numpy((q32 <= _f(Q_CUT)) & pd[:, None, None])
    params = [torch.from_numpy(x).double().requires_grad_(True) for x in (m, q, c, waves)]
    M, Q, C, W = params
    dx = torch.arange(w, dtype=torch.float64)[None, None, :] + 0.5 - M[:, 0, None, None]
    dy = torch.arange(h, dtype=torch.float64)[None, :, None] + 0.5 - M[:, 1, None, None]
    qq = Q[:, 0, None, None] * dx * dx + 2 * Q[:, 1, None, None] * dx * dy \
        + Q[:, 2, None, None] * dy * dy
    e = torch.where(keep, torch.exp(-0.5 * torch.where(keep, qq, torch.zeros_like(qq))),
                    torch.zeros_like(qq))
    arg = W[:, 0, None, None] * dx + W[:, 1, None, None] * dy + W[:, 2, None, None]
    out = torch.einsum("nhw,nc->hwc", e * (1 + W[:, 3, None, None] * torch.cos(arg)), C)
    if grad_out is not None:
        val = (out * torch.from_numpy(grad_out).double()).sum()
    else:
        wt = torch.from_numpy(weight).double()[:, :, None] if weight is not None else 1.0
        val = ((wt * out - torch.from_numpy(target).double()) ** 2).sum() * scale
    val.backward()
    return float(val.detach()), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("case", CASES[:5])
@pytest.mark.parametrize("nt", [1, 2])
def test_fit_plan_with_waves_against_the_exact_forward_and_autograd(ext, isa, case, nt):
    n, h, w, ch, seed = case
    m, q, c, waves = gaussians(n, h, w, ch, seed)
    target, weight, g = images(h, w, ch, seed)
    plan = ext.FitPlan(m, q, h, w, nt, waves)
    assert plan.has_waves and not ext.FitPlan(m, q, h, w, nt).has_waves
    f, e = plan.forward(c, nt), ext.forward(m, q, c, h, w, nt, waves)
    assert np.array_equal(f != 0, e != 0), "the cut-off must be the decoder's"
    assert rel(f, e) <= FORWARD
    scale = 1.0 / target.size
    for wt in (None, weight):
        loss, *grads = plan.loss_backward(c, target, wt, scale, nt)
        ref, ref_grads = reference_loss(m, q, c, waves, h, w, target, wt, scale)
        assert len(grads) == 4 and grads[3].shape == (n, 4)
        assert abs(loss - ref) <= LOSS * ref
        for x, y in zip(grads, ref_grads, strict=True):
            assert rel(x, y) <= GRAD
    _, ref_grads = reference_loss(m, q, c, waves, h, w, None, None, 1.0, grad_out=g)
    for x, y in zip(plan.backward(c, g, nt), ref_grads, strict=True):
        assert rel(x, y) <= GRAD


def test_waves_at_amp_zero_still_get_their_gradients(ext, isa):
    """The fit starts every wave at amp 0: the plan gives d/d amp there (and exactly zero
    d/d(kx, ky, phase), which all carry the factor amp), and draws the plain Gaussians."""
    m, q, c, waves = gaussians(100, 40, 50, 3, 13)
    waves[:, 3] = 0.0
    target, _, _ = images(40, 50, 3, 13)
    plan, plain = ext.FitPlan(m, q, 40, 50, 1, waves), ext.FitPlan(m, q, 40, 50, 1)
    assert np.array_equal(plan.forward(c), plain.forward(c))
    loss, gm, gq, gc, gw = plan.loss_backward(c, target, None, 0.5)
    loss0, gm0, gq0, gc0 = plain.loss_backward(c, target, None, 0.5)
    assert loss == loss0
    for x, y in ((gm, gm0), (gq, gq0), (gc, gc0)):
        assert np.array_equal(x, y)
    assert not gw[:, :3].any()
    _, ref = reference_loss(m, q, c, waves, 40, 50, target, None, 0.5)
    assert np.abs(gw[:, 3]).max() > 0 and rel(gw, ref[3]) <= GRAD


@pytest.mark.parametrize("ch", [1, 3, 4])
def test_colour_only_passes_with_waves(ext, isa, ch):
    """geometry=False gives the full pass's colour gradient bit for bit, the normal
    operator is adjoint(W^2 forward(.)) and the adjoint is the colour gradient of the
    backward."""
    m, q, c, waves = gaussians(150, 40, 52, ch, 21)
    target, weight, g = images(40, 52, ch, 21)
    plan = ext.FitPlan(m, q, 40, 52, 2, waves)
    loss, gm, gq, gc, gw = plan.loss_backward(c, target, weight, 0.25)
    loss2, gc2 = plan.loss_backward(c, target, weight, 0.25, geometry=False)
    assert loss2 == loss and np.array_equal(gc2, gc)
    _, normal = plan.loss_backward(c, None, weight, 0.5, geometry=False)
    ref = plan.adjoint(np.ascontiguousarray(plan.forward(c) * (weight * weight)[:, :, None]))
    assert rel(normal, ref) <= COLOUR
    assert rel(plan.adjoint(g), plan.backward(c, g)[2]) <= COLOUR
    _, ref_grads = reference_loss(m, q, c, waves, 40, 52, None, None, 1.0, grad_out=g)
    assert rel(plan.adjoint(g), ref_grads[2]) <= GRAD


def test_thread_count_and_repeat_give_the_same_bits_with_waves(ext, isa):
    m, q, c, waves = gaussians(500, 150, 90, 3, 8)
    target, weight, g = images(150, 90, 3, 8)
    runs = []
    for nt in (1, 2, 3, 1):
        p = ext.FitPlan(m, q, 150, 90, nt, waves)
        runs.append([p.forward(c, nt), *p.loss_backward(c, target, weight, 0.5, nt),
                     *p.backward(c, g, nt), p.adjoint(g, nt),
                     p.loss_backward(c, None, weight, 0.5, nt, geometry=False)[1],
                     ext.forward(m, q, c, 150, 90, nt, waves)])
    for run in runs[1:]:
        for x, y in zip(run, runs[0], strict=True):
            assert np.array_equal(x, y)


def test_fit_sincos_accuracy(ext, isa):
    assert ext.fit_sincos_max_error(-100.0, 100.0, 400000) < 2e-7   # measured 8.3e-8


def test_edge_cases_with_waves(ext, isa):
    # No Gaussians, an empty image.
    z2, z3, z4 = (np.zeros((0, k), np.float32) for k in (2, 3, 4))
    empty = ext.FitPlan(z2, z3, 6, 7, 1, z4)
    out = empty.loss_backward(z3, np.full((6, 7, 3), 0.5, np.float32), None, 1.0)
    assert len(out) == 5 and out[4].shape == (0, 4)
    m, q, c, waves = gaussians(20, 8, 8, 3, 1)
    flat = ext.FitPlan(m, q, 0, 8, 1, waves)
    _, gm, gq, gc, gw = flat.loss_backward(c, np.zeros((0, 8, 3), np.float32), None, 1.0)
    assert not gm.any() and not gq.any() and not gc.any() and not gw.any()
    assert np.array_equal(ext.forward(m, q, c, 0, 8, 1, waves), np.zeros((0, 8, 3)))
    # Off the image or with a wave that is not finite (amp != 0): nothing, zero gradients.
    m = np.array([[-50, 4], [4, 4]], np.float32)
    q = np.array([[1, 0, 1], [1, 0, 1]], np.float32)
    waves = np.array([[1, 0, 0, 0.5], [np.nan, 0, 0, 0.5]], np.float32)
    p = ext.FitPlan(m, q, 8, 8, 1, waves)
    assert not p.forward(np.ones((2, 3), np.float32)).any() and p.evaluations == 0
    _, gm, gq, gc, gw = p.loss_backward(np.ones((2, 3), np.float32),
                                        np.ones((8, 8, 3), np.float32), None, 1.0)
    assert not gm.any() and not gq.any() and not gc.any() and not gw.any()


# ---- the torch backend -----------------------------------------------------------------------

def test_torch_backend_with_waves(ext, torch_threads):
    from gscodec.render import kernel_torch as kt
    assert kt.SUPPORTS_WAVES
    h, w = 30, 41
    m, q, c, waves = gaussians(60, h, w, 3, 5)
    target, weight, g = images(h, w, 3, 5)
    # render without gradients: the exact forward
    tm, tq, tc, tw = (torch.from_numpy(x) for x in (m, q, c, waves))
    assert np.array_equal(kt.render_cpu(tm, tq, tc, h, w, tw).numpy(),
                          exact_render(m, q, c, waves, h, w))
    # render with gradients: the same pixels, the fitting kernel's gradients
    params = [t.clone().requires_grad_(True) for t in (tm, tq, tc, tw)]
    out = kt.render_cpu(*params[:3], h, w, params[3])
    assert np.array_equal(out.detach().numpy(), exact_render(m, q, c, waves, h, w))
    (out * torch.from_numpy(g)).sum().backward()
    _, ref = reference_loss(m, q, c, waves, h, w, None, None, 1.0, grad_out=g)
    for p, r in zip(params, ref, strict=True):
        assert rel(p.grad.numpy(), r) <= GRAD
    colour_only = tc.clone().requires_grad_(True)
    (kt.render_cpu(tm, tq, colour_only, h, w, tw) * torch.from_numpy(g)).sum().backward()
    assert rel(colour_only.grad.numpy(), ref[2]) <= GRAD
    # the fused loss
    params = [t.clone().requires_grad_(True) for t in (tm, tq, tc, tw)]
    scale = 1.0 / target.size
    loss = kt.render_mse_cpu(*params[:3], torch.from_numpy(target), torch.from_numpy(weight),
                             scale, params[3])
    (2.0 * loss).backward()
    val, ref = reference_loss(m, q, c, waves, h, w, target, weight, scale)
    assert abs(float(loss.detach()) - val) <= LOSS * val
    for p, r in zip(params, ref, strict=True):
        assert rel(p.grad.numpy(), 2.0 * r) <= GRAD


def test_colour_operator_with_waves(ext):
    from gscodec.render import kernel_torch as kt
    h, w = 30, 41
    m, q, c, waves = (torch.from_numpy(x) for x in gaussians(80, h, w, 3, 6))
    op = kt.PlanColorOperator(m, q, h, w, waves)
    x = torch.rand(80, 3)
    assert np.array_equal(op.forward(x).numpy(), kt.make_fit_plan(m, q, h, w, waves).forward(
        x.numpy()))
    assert rel(op.forward(x).numpy(), exact_render(*(t.numpy() for t in (m, q, x, waves)),
                                                   h, w)) <= FORWARD
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), rtol=1e-5, atol=1e-6)
    off = waves.clone()
    off[:, 3] = 0.0          # all amplitudes 0: the operator of the set without waves
    plain = kt.PlanColorOperator(m, q, h, w)
    assert torch.equal(kt.PlanColorOperator(m, q, h, w, off).forward(x), plain.forward(x))


# ---- the decoder -----------------------------------------------------------------------------

def test_vectors_decode_with_the_kernel_to_the_numpy_renderers_bytes(ext):
    """Every test vector up to 256x256 (the wave vector among them), at scales 1, 1.7 and
    0.5: the kernel's window (the decoder's path) is numpy_reference's, bit for bit."""
    import pathlib

    import gscodec
    from gscodec.decoder import output_size
    from gscodec.render import numpy_reference, transform_for_view, waves_for_view
    vectors = sorted((pathlib.Path(__file__).resolve().parent / "vectors").glob("*.gsi"))
    waved = 0
    for path in vectors:
        qg = gscodec.read(path.read_bytes())
        if qg.width * qg.height > 256 * 256:
            continue
        waved += qg.render_waves() is not None
        for scale in (1.0, 1.7, 0.5):
            m, q, c = qg.render_inputs()
            m, q = transform_for_view(m, q, scale)
            waves = waves_for_view(qg.render_waves(), scale)
            w, h = output_size(qg.width, qg.height, scale)
            assert np.array_equal(kernel.render_window(m, q, c, 0, 0, w, h, waves=waves),
                                  numpy_reference.render_window(m, q, c, 0, 0, w, h,
                                                                waves=waves)), path.name
    assert waved >= 1


# ---- the encoder -----------------------------------------------------------------------------

def test_objective_fused_loss_with_waves_against_torch_reference(ext, torch_threads):
    """The fit's loss with waves on the kernel (one fused call) against the torch reference:
    the value and the gradients of every attribute, waves [N, 5] included (amp, log2
    frequency and phase through autograd from the kernel's gwaves; waves at amp 0 and
    switched-off ones among them)."""
    from gscodec.encoder.config import FitConfig
    from gscodec.encoder.objective import Objective
    from gscodec.encoder.params import WAVE_AMP, WAVE_ON, GaussianParams, start_waves
    rng = np.random.default_rng(31)
    h, w, n = 40, 52, 70
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gen = torch.Generator().manual_seed(3)
    wave = start_waves(n, gen, (-0.75, 1.6), "cpu")
    wave[:, WAVE_AMP] = torch.from_numpy(rng.uniform(-0.8, 0.8, n)).float()
    wave[: n // 5, WAVE_AMP] = 0.0
    wave[n // 5: n // 4, WAVE_ON] = 0.0
    p0 = GaussianParams(torch.from_numpy(rng.uniform(0, 1, (n, 2)) * [w, h]).float(),
                        torch.from_numpy(rng.uniform(0, 2.5, (n, 2))).float(),
                        torch.from_numpy(rng.uniform(0, 3, n)).float(),
                        torch.from_numpy(rng.uniform(0, 0.3, (n, 3))).float(), wave)
    results = {}
    for backend in ("auto", "torch_reference"):
        obj = Objective(img, FitConfig(backend=backend))
        p = GaussianParams(*(t.clone().requires_grad_(True) for t in p0.tensors()))
        _, loss = obj.loss(p)
        loss.backward()
        results[backend] = (float(loss.detach()), [t.grad.numpy().copy() for t in p.tensors()], obj)
    loss, grads, obj = results["auto"]
    ref, ref_grads, _ = results["torch_reference"]
    assert obj._fused
    # measured (seeds 31, 5, 9): loss 8e-8, gradients 1.0e-6 (rot) relative
    assert abs(loss - ref) <= 1e-6 * ref
    for x, y in zip(grads, ref_grads, strict=True):
        assert rel(x, y) <= 1e-5
    assert np.abs(grads[4][:, :3]).max() > 0          # amp, log2 frequency, phase
