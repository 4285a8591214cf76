"""The fit loop (issue 30): gradients in closed form, Adam over one buffer, torch at one
thread with the kernel at all, colour solves on the fused normal operator."""
import math

import numpy as np
import pytest
import torch

from gscodec.bitstream.model import conics_from_scale_rot
from gscodec.encoder.adam import Adam, AdamPhase, FlatAdam, FlatParams, run_adam
from gscodec.encoder.config import FitConfig
from gscodec.encoder.init import solve_colors
from gscodec.encoder.masked import HoleAwareObjective
from gscodec.encoder.objective import Objective
from gscodec.encoder.params import GaussianParams, start_waves
from gscodec.encoder.progress import Progress
from gscodec.encoder.stages import EncodeState, adam_steps
from gscodec.encoder.threads import one_thread
from gscodec.render import kernel


def needs_kernel():
    if not kernel.kernel_available():
        pytest.skip("compiled CPU kernel unavailable")


def random_set(n, h, w, c=3, seed=0, waves=False):
    g = torch.Generator().manual_seed(seed)
    p = GaussianParams(torch.rand(n, 2, generator=g) * torch.tensor([w, h]),
                       torch.rand(n, 2, generator=g) * 3 - 0.5,
                       torch.rand(n, generator=g) * 6 - 3,
                       torch.rand(n, c, generator=g))
    if waves:
        p.wave = start_waves(n, g, (-0.75, 1.6), "cpu")
    return p


def image(h=40, w=56, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_kernel_flat_chain_is_the_chain_rule_of_the_conics():
    """The kernel's flat parameters: fit_plan_flat's conics are the format's conics of the
    log2 scales and angles, and flat_gradients their chain rule (against float64 autograd
    through bitstream.model.conics_from_scale_rot), x [N, 5 + C + 2] read by row stride,
    the colour gradients copied after the chain, zeros in the columns after."""
    needs_kernel()
    from gscodec.render import extension
    ext = extension.kernel()
    p = random_set(60, 40, 56)
    x = torch.cat([p.pos, p.scale, p.rot[:, None], p.color, torch.ones(60, 2)], 1)
    g = torch.Generator().manual_seed(5)
    gm, gq, gc = (torch.randn(60, k, generator=g) for k in (2, 3, 3))
    out = torch.from_numpy(ext.flat_gradients(x.numpy(), gm.numpy(), gq.numpy(), gc.numpy()))
    scale = p.scale.double().requires_grad_(True)
    rot = p.rot.double().requires_grad_(True)
    conics = conics_from_scale_rot(torch.exp2(scale), rot)
    (conics * gq.double()).sum().backward()
    assert torch.equal(out[:, :2], gm) and torch.equal(out[:, 5:8], gc)
    assert torch.allclose(out[:, 2:4].double(), scale.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out[:, 4].double(), rot.grad, rtol=1e-5, atol=1e-6)
    assert not out[:, 8:].any()
    # the plan of x is the plan of its means and conics
    plan = ext.fit_plan_flat(x.numpy(), 40, 56)
    ref = ext.FitPlan(p.pos.numpy(), conics.detach().float().numpy(), 40, 56)
    assert np.allclose(plan.forward(p.color.numpy()), ref.forward(p.color.numpy()),
                       rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x must be"):
        ext.fit_plan_flat(np.zeros((3, 4), np.float32), 40, 56)
    with pytest.raises(ValueError, match="flat_gradients"):
        ext.flat_gradients(x.numpy(), gm.numpy(), gq.numpy(), torch.zeros(60, 6).numpy())


@pytest.mark.parametrize("masked", [False, True])
def test_closed_form_gradients_equal_autograd(masked):
    """Objective.closed_form_gradients (the kernel's gradients chained in closed form) gives
    the loss's value and gradients of autograd through Objective.loss, for the plain
    objective (one fused kernel call) and the masked one (its prior and gradient terms
    through the kernel's backward)."""
    needs_kernel()
    img = image()
    mask = None
    if masked:
        mask = np.zeros(img.shape[:2], bool)
        mask[10:25, 15:40] = True
    cls = HoleAwareObjective if masked else Objective
    obj = cls(img, FitConfig(), mask)
    p = obj.start(60, EncodeState.new(obj, 0).gen)
    mse, g = obj.closed_form_gradients(p)
    q = GaussianParams(*(t.clone().requires_grad_(True) for t in p.tensors()))
    ref_mse, loss = obj.loss(q)
    loss.backward()
    ref_mse = float(ref_mse.detach())
    assert abs(mse - ref_mse) <= 1e-5 * ref_mse
    for name in ("pos", "scale", "rot", "color"):
        a, b = getattr(g, name), getattr(q, name).grad
        # Both run the fitting kernel for the plain objective (measured up to 6e-6 of the
        # largest gradient); the masked one's autograd renders with the exact kernel (1.4e-5).
        assert torch.allclose(a, b, rtol=1e-4, atol=2e-4 * float(b.abs().max())), name


def scattered_mask(h=40, w=56, seed=2):
    """Pixels missing at random all over the image: the hole's box is the whole image."""
    m = np.random.default_rng(seed).random((h, w)) < 0.1
    m[0, 0] = m[-1, -1] = True
    return m


def box_mask(h=40, w=56, edge=False):
    m = np.zeros((h, w), bool)
    if edge:
        m[:12, 30:] = True      # the box grown by one pixel is clipped to the image
    else:
        m[10:25, 15:40] = True
    return m


@pytest.mark.parametrize("cls, mask", [
    (Objective, None), (Objective, scattered_mask()), (HoleAwareObjective, box_mask()),
    (HoleAwareObjective, box_mask(edge=True)), (HoleAwareObjective, scattered_mask())],
    ids=["plain", "plain-scattered", "hole-box", "hole-edge-box", "hole-scattered"])
def test_image_gradient_equals_autograd(cls, mask):
    """Objective.image_gradient (closed form; the masked objective's extra term on the
    hole's box) is the mse and the gradient of mse + extra_loss by autograd, on a random
    render."""
    obj = cls(image(), FitConfig(), mask)
    out = torch.rand(obj.h, obj.w, obj.c, generator=torch.Generator().manual_seed(4)) * 1.2 - 0.1
    mse, g = obj.image_gradient(out)
    ref = out.clone().requires_grad_(True)
    ref_mse = obj.mse(ref)
    (ref_g,) = torch.autograd.grad(ref_mse + obj.extra_loss(None, ref), ref)
    assert mse == pytest.approx(float(ref_mse.detach()), rel=1e-5)
    assert torch.allclose(g, ref_g, rtol=1e-5, atol=1e-6 * float(ref_g.abs().max()))


def test_closed_form_gradients_leave_waves_to_autograd():
    """A set with waves (the kernel has none) takes the autograd path."""
    obj = Objective(image(), FitConfig())
    assert obj.closed_form_gradients(random_set(5, 40, 56, waves=True)) is None


def test_closed_form_gradients_only_on_the_kernel():
    """Another backend (here the torch reference) takes the autograd path; the default
    backend on CPU tensors resolves to the kernel, which has the closed form."""
    needs_kernel()
    p = random_set(5, 40, 56)
    assert Objective(image(), FitConfig(backend="torch_reference")).closed_form_gradients(p) \
        is None
    assert Objective(image(), FitConfig()).closed_form_gradients(p) is not None


def test_flat_params_are_views_of_one_buffer():
    p = random_set(7, 20, 30, c=4, waves=True)
    flat = FlatParams(p)
    assert flat.x.shape == (7, 2 + 2 + 1 + 4 + 5)
    for name in ("pos", "scale", "rot", "color", "wave"):
        assert torch.equal(getattr(flat.params, name), getattr(p, name))
    flat.x[:, flat.slices["rot"]] += 1.0
    assert torch.equal(flat.params.rot, p.rot + 1.0)
    assert torch.equal(flat.pack(flat.params), flat.x)
    lr = flat.columns({"pos": 2.0, "wave": (1.0, 2.0, 3.0, 0.0, 0.0)})
    assert lr.tolist() == [2.0, 2.0] + [0.0] * 7 + [1.0, 2.0, 3.0, 0.0, 0.0]


@pytest.mark.parametrize("on_kernel", [True, False])
def test_flat_adam_is_adam_per_column(on_kernel, monkeypatch):
    """One Adam over the buffer, a step per column, takes the steps of Adam per tensor: in
    the kernel's one call (adam_step) and in torch."""
    from gscodec.encoder import adam
    if on_kernel:
        needs_kernel()
    else:
        monkeypatch.setattr(adam, "_kernel_for", lambda x: None)
    p = random_set(9, 20, 30)
    grads = [torch.randn(6, *t.shape, generator=torch.Generator().manual_seed(i))
             for i, t in enumerate(p.tensors())]
    lrs = (0.1, 0.02, 0.03, 0.005)
    ref = [t.clone() for t in p.tensors()]
    opt = Adam(list(zip(ref, lrs, strict=True)), betas=(0.9, 0.9))
    flat = FlatParams(p)
    fopt = FlatAdam(flat.x, flat.columns(dict(zip(("pos", "scale", "rot", "color"), lrs,
                                                  strict=True))), betas=(0.9, 0.9))
    for k in range(6):
        for t, g in zip(ref, grads, strict=True):
            t.grad = g[k]
        opt.step()
        fopt.step(flat.pack(GaussianParams(*(g[k] for g in grads))))
    for a, name in zip(ref, ("pos", "scale", "rot", "color"), strict=True):
        assert torch.allclose(getattr(flat.params, name), a, rtol=1e-6, atol=1e-6)


def test_kernel_adam_step_only_steps_in_place():
    """adam_step refuses what it could not step in place (a cast or a copy would leave
    the caller's buffer unchanged) and a step count below 1."""
    needs_kernel()
    from gscodec.render import extension
    ext = extension.kernel()
    x, m, v, g = (np.zeros((4, 3), np.float32) for _ in range(4))
    lr = np.ones(3, np.float32)
    with pytest.raises(TypeError):
        ext.adam_step(x.astype(np.float64), m, v, g, lr, 0.9, 0.9, 1, 1e-12, 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.adam_step(np.zeros((3, 4), np.float32).T, m, v, g, lr, 0.9, 0.9, 1, 1e-12, 1.0)
    with pytest.raises(ValueError, match="t"):
        ext.adam_step(x, m, v, g, lr, 0.9, 0.9, 0, 1e-12, 1.0)
    g[:] = 1.0
    ext.adam_step(x, m, v, g, lr, 0.9, 0.9, 1, 1e-12, 1.0)
    assert np.allclose(x, -1.0)     # Adam's first step is -lr along the gradient's sign


def test_fixed_attributes_stay_bit_for_bit():
    """A phase fitting only some attributes leaves the others exactly as they were."""
    obj = Objective(image(), FitConfig())
    state = EncodeState.new(obj, 0)
    state.params = obj.start(30, state.gen)
    before = state.params.detach()
    phase = AdamPhase("t", 5, adam_steps(obj.cfg), 1.0, 0.9, 0.05, free=("rot", "color"))
    after = run_adam(obj, state, phase, Progress(0, False))
    assert torch.equal(after.pos, before.pos) and torch.equal(after.scale, before.scale)
    assert not torch.equal(after.color, before.color)


def test_one_thread_keeps_the_kernels_threads(monkeypatch):
    """Inside one_thread torch runs at one thread and the kernel's calls at the count
    torch had; both are restored after."""
    needs_kernel()
    from gscodec.render import kernel_torch
    ext = kernel_torch.extension.kernel()
    seen = []

    class Spy:
        def fit_plan_flat(self, x, h, w, nt):
            seen.append(nt)
            return ext.fit_plan_flat(x, h, w, nt)

        def __getattr__(self, name):
            return getattr(ext, name)

    monkeypatch.setattr(kernel_torch.extension, "kernel", lambda: Spy())
    obj = Objective(image(), FitConfig())
    p = random_set(10, 40, 56)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with one_thread():
            inside = torch.get_num_threads()
            obj.closed_form_gradients(p)
        assert (inside, torch.get_num_threads()) == (1, 2)
    finally:
        torch.set_num_threads(old)
    assert seen == [2]


def test_colour_solve_on_the_fused_normal_operator_equals_forward_and_adjoint(monkeypatch):
    """solve_colors' steps on the fitting kernel's fused passes (normal, residual) give
    the colours of the same steps through forward and adjoint, with and without weights."""
    needs_kernel()
    from gscodec.encoder import init
    target = torch.from_numpy(image().astype(np.float32) / 255)
    p = random_set(40, 40, 56)
    weight = torch.ones(40, 56)
    weight[5:20, 10:30] = 0.5
    make = init.color_operator_params

    class Plain:     # forward and adjoint only
        def __init__(self, op):
            self.forward, self.adjoint = op.forward, op.adjoint

    for w in (None, weight):
        fused = solve_colors(target, p, 8, w)
        monkeypatch.setattr(init, "color_operator_params", lambda *a: Plain(make(*a)))
        plain = solve_colors(target, p, 8, w)
        monkeypatch.setattr(init, "color_operator_params", make)
        # (measured identical: the fused pass adds the same products in the same order)
        assert torch.allclose(fused, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))
        assert not math.isclose(float(fused.sum()), float(p.color.sum()))
