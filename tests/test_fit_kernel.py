"""The fitting kernel (gscodec._raster.FitPlan): FMA, a cheaper exp and weights by
recurrence along rows, so not bit-exact; it must agree with the exact kernel (Plan, whose
forward is the decoder's) and the torch reference within measured bounds, cut off exactly
the pixels the decoder does, and give the same bits at any thread count.

Bounds (max deviation over the image or the gradient array, relative to its largest value;
measured on these cases with both ISAs at one and two threads, 2026-12-05):
- Gaussians of sigma 0.3 to 30 px: forward 5.4e-6, loss 1.3e-6, gradients 2.1e-5;
- needle-thin and huge ones (test_render.degenerate_gaussians): forward 9.6e-4, gradients
  1.5e-3. Their q adds terms of 100s that cancel to a few units: the exact kernel's q has
  rounding errors of that order too; the fit's weights round them differently.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_render import degenerate_gaussians, random_gaussians

TIGHT = {"forward": 5e-5, "loss": 1e-5, "grad": 2e-4}        # about 10x the measured
LOOSE = {"forward": 1e-2, "loss": 1e-5, "grad": 1e-2}        # about 7x the measured

CASES = [  # (n, height, width, channels, seed)
    (200, 37, 23, 3, 0), (300, 64, 96, 1, 1), (150, 50, 70, 4, 2), (80, 45, 33, 2, 3),
    (5, 1, 1, 3, 4), (10, 7, 1, 1, 6), (400, 120, 160, 3, 7)]




def rel(x, y) -> float:
    return float(np.abs(x - y).max() / max(float(np.abs(y).max()), 1e-30)) if y.size else 0.0


def geometry(kind, n, h, w, ch, seed):
    if kind == "random":
        t = random_gaussians(n, h, w, ch, seed=seed)
    else:
        t = degenerate_gaussians(h, w, ch, seed=seed + 100)
    return [x.numpy() for x in t]


def images(h, w, ch, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (h, w, ch)).astype(np.float32),
            (rng.uniform(0, 1, (h, w)) > 0.3).astype(np.float32),
            rng.standard_normal((h, w, ch)).astype(np.float32))


@pytest.mark.parametrize("kind", ["random", "degenerate"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("nt", [1, 2])
def test_fit_plan_agrees_with_the_exact_plan(ext, isa, kind, case, nt):
    n, h, w, ch, seed = case
    tol = TIGHT if kind == "random" else LOOSE
    m, q, c = geometry(kind, n, h, w, ch, seed)
    target, weight, g = images(h, w, ch, seed)
    exact, fit = ext.Plan(m, q, h, w, nt), ext.FitPlan(m, q, h, w, nt)
    e, f = exact.forward(c, nt), fit.forward(c, nt)
    assert f.shape == e.shape and f.dtype == np.float32
    assert np.array_equal(f != 0, e != 0), "the cut-off must be the decoder's"
    assert rel(f, e) <= tol["forward"]
    for wt in (None, weight):
        le, lf = exact.loss_backward(c, target, wt, 0.5, nt), fit.loss_backward(c, target, wt,
                                                                                 0.5, nt)
        assert abs(lf[0] - le[0]) <= tol["loss"] * le[0]
        for x, y in zip(lf[1:], le[1:], strict=True):
            assert rel(x, y) <= tol["grad"]
    for x, y in zip(fit.backward(c, g, nt), exact.backward(c, g, nt), strict=True):
        assert rel(x, y) <= tol["grad"]
    assert rel(fit.adjoint(g, nt), exact.adjoint(g, nt)) <= tol["grad"]


@pytest.mark.parametrize("ch", [1, 2, 3, 4])
def test_colour_only_pass_and_normal_operator(ext, isa, ch):
    """geometry=False gives the colour gradient of the full pass, bit for bit, and with no
    target it is the normal operator A^T W^2 A of the colour solves."""
    m, q, c = geometry("random", 150, 40, 52, ch, 11)
    target, weight, _ = images(40, 52, ch, 11)
    fit = ext.FitPlan(m, q, 40, 52)
    loss, gm, gq, gc = fit.loss_backward(c, target, weight, 0.25)
    loss2, gc2 = fit.loss_backward(c, target, weight, 0.25, geometry=False)
    assert loss2 == loss and np.array_equal(gc2, gc)
    _, normal = fit.loss_backward(c, None, weight, 0.5, geometry=False)
    ref = fit.adjoint(np.ascontiguousarray(fit.forward(c) * (weight * weight)[:, :, None]))
    assert rel(normal, ref) <= TIGHT["grad"]


def test_gradients_agree_with_the_torch_reference(ext, isa):
    """The fused loss's gradients against autograd through the float64 torch reference."""
    from gscodec.render.torch_reference import render_reference
    h, w, ch = 30, 41, 3
    m, q, c = geometry("random", 60, h, w, ch, 5)
    target, weight, _ = images(h, w, ch, 5)
    scale = 1.0 / target.size
    loss, *grads = ext.FitPlan(m, q, h, w).loss_backward(c, target, weight, scale)
    params = [torch.from_numpy(x).double().requires_grad_(True) for x in (m, q, c)]
    out = render_reference(*params, h, w)
    wt = torch.from_numpy(weight).double()[:, :, None]
    ref = (((wt * out - torch.from_numpy(target).double()) ** 2).sum() * scale)
    ref.backward()
    assert abs(loss - float(ref.detach())) <= 1e-5 * float(ref.detach())
    for x, p in zip(grads, params, strict=True):
        assert rel(x, p.grad.numpy()) <= 1e-4   # the reference's float32 q, float64 sums


def test_thread_count_and_repeat_give_the_same_bits(ext, isa):
    m, q, c = geometry("random", 500, 150, 90, 3, 8)
    dm, dq, dc = geometry("degenerate", 0, 150, 90, 3, 8)
    m, q, c = np.concatenate([m, dm]), np.concatenate([q, dq]), np.concatenate([c, dc])
    target, weight, g = images(150, 90, 3, 8)
    runs = []
    for nt in (1, 2, 3, 1):
        p = ext.FitPlan(m, q, 150, 90, nt)
        runs.append([p.forward(c, nt), *p.loss_backward(c, target, weight, 0.5, nt)[1:],
                     *p.backward(c, g, nt), p.adjoint(g, nt)])
    for run in runs[1:]:
        for x, y in zip(run, runs[0], strict=True):
            assert np.array_equal(x, y)


def test_edge_cases(ext, isa):
    # No Gaussians: an empty image renders zero, the loss is that of the target alone.
    z2, z3 = np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32)
    target = np.full((6, 7, 3), 0.5, np.float32)
    empty = ext.FitPlan(z2, z3, 6, 7)
    assert empty.count == 0 and empty.evaluations == 0
    assert np.array_equal(empty.forward(z3), np.zeros((6, 7, 3), np.float32))
    loss, gm, gq, gc = empty.loss_backward(z3, target, None, 1.0)
    assert loss == pytest.approx(float((target.astype(np.float64) ** 2).sum()))
    assert gm.shape == (0, 2) and gq.shape == (0, 3) and gc.shape == (0, 3)
    # An empty image: zero gradients for every Gaussian.
    m, q, c = geometry("random", 20, 8, 8, 3, 1)
    flat = ext.FitPlan(m, q, 0, 8)
    loss, gm, gq, gc = flat.loss_backward(c, np.zeros((0, 8, 3), np.float32), None, 1.0)
    assert loss == 0.0 and not gm.any() and not gq.any() and not gc.any()
    # Off the image, not positive definite or not finite: nothing drawn, zero gradients.
    m = np.array([[-50, 4], [4, 4], [4, 4], [np.nan, 4], [4, 4]], np.float32)
    q = np.array([[1, 0, 1], [1, 2, 1], [-1, 0, 1], [1, 0, 1], [1, 0, np.inf]], np.float32)
    c = np.ones((5, 3), np.float32)
    p = ext.FitPlan(m, q, 8, 8)
    assert not p.forward(c).any() and p.evaluations == 0
    _, gm, gq, gc = p.loss_backward(c, np.ones((8, 8, 3), np.float32), None, 1.0)
    assert not gm.any() and not gq.any() and not gc.any()
    # Tiny (sub-pixel) and huge Gaussians are drawn where the exact kernel draws them.
    m = np.array([[3.5, 2.5], [3.2, 2.9], [4.0, 4.0]], np.float32)
    q = np.array([[64, 0, 64], [400, 0, 1e-4], [1e-8, 0, 1e-8]], np.float32)
    c = np.ones((3, 1), np.float32)
    e, f = ext.Plan(m, q, 9, 11).forward(c), ext.FitPlan(m, q, 9, 11).forward(c)
    assert np.array_equal(f != 0, e != 0) and rel(f, e) <= TIGHT["forward"]


def test_bad_arguments(ext):
    m, q, c = geometry("random", 5, 12, 16, 3, 0)
    p = ext.FitPlan(m, q, 12, 16)
    with pytest.raises(ValueError, match="colors must be"):
        p.forward(c[:, :2].copy()[:4])
    with pytest.raises(ValueError, match="target must be"):
        p.loss_backward(c, np.zeros((12, 16, 2), np.float32), None, 1.0)
    with pytest.raises(ValueError, match="weight must be"):
        p.loss_backward(c, None, np.ones((3, 3), np.float32), 1.0)
    with pytest.raises(ValueError, match="bad shapes"):
        ext.FitPlan(m, q[:4], 12, 16)
    with pytest.raises(ValueError, match="negative image size"):
        ext.FitPlan(m, q, -1, 16)


def test_fit_exp_accuracy(ext, isa):
    """The fitting kernel's exp over the range its weights use (q in [0, Q_CUT])."""
    assert ext.fit_exp_max_rel_error(-6.5, 0.5, 200000) < 1e-6


def test_torch_backend_fit_paths_use_the_fitting_kernel(ext, monkeypatch):
    """The fused loss and the colour operator run on FitPlan; render stays exact."""
    from gscodec.render import kernel_torch
    made = []
    real = ext.FitPlan

    class Spy:
        def __getattr__(self, name):
            return getattr(ext, name)

        def FitPlan(self, *args):  # noqa: N802 - the kernel's class name
            made.append(args[2:4])
            return real(*args)

    monkeypatch.setattr(kernel_torch.extension, "kernel", lambda: Spy())
    m, q, c = (torch.from_numpy(x) for x in geometry("random", 30, 10, 12, 3, 2))
    target = torch.rand(10, 12, 3)
    kernel_torch.render_mse_cpu(m, q, c.requires_grad_(True), target, None, 0.1)
    op = kernel_torch.PlanColorOperator(m, q, 10, 12)
    x = torch.rand(30, 3)
    assert made == [(10, 12), (10, 12)]
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), rtol=1e-5, atol=1e-6)
