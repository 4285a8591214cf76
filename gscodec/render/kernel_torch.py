"""The compiled CPU kernel as a differentiable torch backend (backend "kernel", see
gscodec.render.backends), for the encoder.

Tensors are passed to the numpy kernel as zero-copy views (when already float32 and
contiguous) and results come back with torch.from_numpy. The kernel runs on
torch.get_num_threads() threads, so torch.set_num_threads bounds it too; inside
`kernel_threads_kept()` it keeps the count torch had on entry while torch itself runs at
fewer (the encoder runs its small tensor operations at one thread: `encoder/threads.py`).

A differentiable render keeps the kernel's `Plan` (row spans and weights of the geometry)
from the forward to the backward, which then only multiplies and adds: forward+backward
took 0.76x the time of separate calls (kodim05, 2359 Gaussians, two threads).

The fit's own paths, the fused loss (`render_mse_cpu`) and the colour solves
(`PlanColorOperator`), run on the fitting kernel, `FitPlan`: FMA and a cheaper exp, within
about 1e-6 of the exact weights, the decoder's cut-off, band by band; 0.3x the time of
`Plan` for the fused step (benchmarks/bench_fit_step.py). Only the fit sees it: the file is
decoded (and the tests compare renders) on the exact path.

Waves (format version 5, `waves` [N, 4] = (kx, ky, phase, amp)): `render_cpu` draws them
with the exact forward and takes their gradients from the fitting kernel; the fused loss
returns the gradients of the waves too (for every Gaussian, amp 0 included: the fit starts
its waves there); the colour operator of a set whose amplitudes are all 0 is that of the
set without waves.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from . import extension

SUPPORTS_WAVES = True   # render_cpu, render_mse_cpu and PlanColorOperator draw waves

_kept_threads: int | None = None    # set by kernel_threads_kept()


def kernel_threads() -> int:
    """The thread count of the kernel's calls: torch's, or the one kept for it."""
    return _kept_threads or torch.get_num_threads()


@contextmanager
def kernel_threads_kept():
    """Inside the block the kernel's calls keep torch's thread count of its entry, whatever
    torch.set_num_threads sets meanwhile."""
    global _kept_threads
    prev = _kept_threads
    _kept_threads = kernel_threads()
    try:
        yield
    finally:
        _kept_threads = prev


def _np(t: torch.Tensor):
    return t.detach().to(torch.float32).contiguous().numpy()


# Weights a plan may keep (float32: 128 MB); a larger geometry keeps only its row spans and
# recomputes the weights in each pass.
MAX_PLAN_WEIGHTS = 1 << 25


def make_plan(means: torch.Tensor, conics: torch.Tensor, height: int, width: int):
    return extension.kernel().Plan(_np(means), _np(conics), int(height), int(width),
                             kernel_threads(), MAX_PLAN_WEIGHTS)


def make_fit_plan(means: torch.Tensor, conics: torch.Tensor, height: int, width: int,
                  waves: torch.Tensor | None = None):
    """The fitting kernel's plan of a geometry, with waves [N, 4] or None (the exact Plan on
    a build without it, which has no waves)."""
    ext = extension.kernel()
    if not hasattr(ext, "FitPlan"):
        if waves is not None:
            raise RuntimeError("this build of the CPU kernel has no FitPlan (no waves)")
        return make_plan(means, conics, height, width)
    extra = () if waves is None else (_np(waves),)
    return ext.FitPlan(_np(means), _np(conics), int(height), int(width),
                       kernel_threads(), *extra)


def release_buffers() -> int:
    """Free the weight buffers the kernel keeps for the next plan (bytes freed; 0 without
    the kernel). `encode` calls it when it ends."""
    k = extension.kernel()
    return int(k.release_buffers()) if k is not None else 0


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, height, width):
        c = colors.detach().to(torch.float32).contiguous()
        ctx.plan = make_plan(means, conics, height, width)
        ctx.save_for_backward(c)
        ctx.dtypes = (means.dtype, conics.dtype, colors.dtype)
        return torch.from_numpy(ctx.plan.forward(c.numpy(), kernel_threads()))

    @staticmethod
    def backward(ctx, grad_out):
        (c,) = ctx.saved_tensors
        gm, gq, gc = ctx.plan.backward(c.numpy(), _np(grad_out), kernel_threads())
        ctx.plan = None  # its weight buffer goes back to the kernel's pool for the next step
        dm, dq, dc = ctx.dtypes
        return (torch.from_numpy(gm).to(dm) if ctx.needs_input_grad[0] else None,
                torch.from_numpy(gq).to(dq) if ctx.needs_input_grad[1] else None,
                torch.from_numpy(gc).to(dc) if ctx.needs_input_grad[2] else None, None, None)


class _RasterizeWavesCPU(torch.autograd.Function):
    """render with waves: the exact forward (the pixels the decoder draws), gradients from
    the fitting kernel (FitPlan.backward: within about 1e-6 of the exact weights)."""

    @staticmethod
    def forward(ctx, means, conics, colors, waves, height, width):
        arrays = [t.detach().to(torch.float32).contiguous() for t in (means, conics, colors,
                                                                        waves)]
        ctx.save_for_backward(*arrays)
        ctx.size = (height, width)
        ctx.dtypes = tuple(t.dtype for t in (means, conics, colors, waves))
        m, q, c, wv = (t.numpy() for t in arrays)
        return torch.from_numpy(extension.kernel().forward(m, q, c, height, width,
                                                        kernel_threads(), wv))

    @staticmethod
    def backward(ctx, grad_out):
        m, q, c, wv = (t.numpy() for t in ctx.saved_tensors)
        nt = kernel_threads()
        g = _np(grad_out)
        plan = extension.kernel().FitPlan(m, q, *ctx.size, nt, wv)
        need = ctx.needs_input_grad
        if need[0] or need[1] or need[3]:
            grads = plan.backward(c, g, nt)            # gmeans, gconics, gcolors, gwaves
        else:
            grads = (None, None, plan.adjoint(g, nt), None)
        out = [torch.from_numpy(x).to(dt) if n and x is not None else None
               for x, dt, n in zip(grads, ctx.dtypes, need[:4], strict=True)]
        return (*out, None, None)


def render_cpu(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
               height: int, width: int, waves: torch.Tensor | None = None) -> torch.Tensor:
    """Render with the compiled kernel: [height, width, C] float32, differentiable (in the
    waves [N, 4] (kx, ky, phase, amp) too, if given)."""
    if extension.kernel() is None:
        raise RuntimeError(f"CPU raster kernel unavailable: {extension.unavailable_reason()}")
    tensors = (("means", means), ("conics", conics), ("colors", colors), ("waves", waves))
    for name, t in tensors:
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"render backend 'kernel' needs CPU tensors, {name} is on {t.device}")
    extension.check_shapes(means.shape, conics.shape, colors.shape)
    if waves is not None and tuple(waves.shape) != (means.shape[0], 4):
        raise ValueError(f"bad shape: waves {tuple(waves.shape)}, need [{means.shape[0]}, 4]")
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                            for _, t in tensors)):
        # No backward will follow: the one-pass forward, without a plan.
        extra = () if waves is None else (_np(waves),)
        out = extension.kernel().forward(_np(means), _np(conics), _np(colors), int(height),
                                   int(width), kernel_threads(), *extra)
        return torch.from_numpy(out)
    if waves is not None:
        return _RasterizeWavesCPU.apply(means, conics, colors, waves, int(height), int(width))
    return _RasterizeCPU.apply(means, conics, colors, int(height), int(width))


class _RenderMSECPU(torch.autograd.Function):
    """scale * sum((weight * render - target)^2) and its gradients in one kernel call
    (Plan.loss_backward): the rendered image never reaches torch."""

    @staticmethod
    def forward(ctx, means, conics, colors, target, weight, scale, waves):
        h, w, _ = target.shape
        plan = make_fit_plan(means, conics, h, w, waves)
        loss, gm, gq, gc, *gw = plan.loss_backward(
            _np(colors), _np(target), None if weight is None else _np(weight), float(scale),
            kernel_threads())
        ctx.grads = (torch.from_numpy(gm).to(means.dtype), torch.from_numpy(gq).to(conics.dtype),
                     torch.from_numpy(gc).to(colors.dtype))
        ctx.gwaves = torch.from_numpy(gw[0]).to(waves.dtype) if gw else None
        return torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    def backward(ctx, g):
        gm, gq, gc = ctx.grads
        gw = ctx.gwaves
        ctx.grads = ctx.gwaves = None
        return gm * g, gq * g, gc * g, None, None, None, None if gw is None else gw * g


def render_mse_cpu(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
                   target: torch.Tensor, weight: torch.Tensor | None, scale: float,
                   waves: torch.Tensor | None = None) -> torch.Tensor:
    """scale * sum((weight[:, :, None] * render(...) - target)^2), differentiable in means,
    conics, colors and waves [N, 4] (if given), with the compiled kernel. The gradients are
    computed with the value (the fit always asks for them): 0.8x the time of render +
    F.mse_loss + backward."""
    if extension.kernel() is None:
        raise RuntimeError(f"CPU raster kernel unavailable: {extension.unavailable_reason()}")
    extension.check_shapes(means.shape, conics.shape, colors.shape)
    if waves is not None and tuple(waves.shape) != (means.shape[0], 4):
        raise ValueError(f"bad shape: waves {tuple(waves.shape)}, need [{means.shape[0]}, 4]")
    return _RenderMSECPU.apply(means, conics, colors, target, weight, scale, waves)


class PlanColorOperator:
    """The linear map A: colours [N, C] -> image [H, W, C] of a fixed geometry, and its
    adjoint, on one fitting-kernel plan (the colour solves' conjugate gradients make ~25
    passes)."""

    def __init__(self, means: torch.Tensor, conics: torch.Tensor, height: int, width: int,
                 waves: torch.Tensor | None = None):
        # The colours alone vary here: waves whose amplitudes are all 0 change nothing.
        if waves is not None and not bool((waves[:, 3] != 0).any()):
            waves = None
        self.plan = make_fit_plan(means, conics, height, width, waves)
        self.fused = hasattr(extension.kernel(), "FitPlan")   # has loss_backward(geometry=)

    def forward(self, colors: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.plan.forward(_np(colors), kernel_threads()))

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.plan.adjoint(_np(v), kernel_threads()))

    def normal(self, colors: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """A^T W^2 A colors (W: the per-pixel weight [H, W], None for ones) in one pass,
        each band's weights kept from its forward to its adjoint: a conjugate-gradient step's
        adjoint(forward(.)) in 0.6x the time (bench_fit_step.py, cg_fit_fused)."""
        if not self.fused:
            out = self.forward(colors)
            w2 = None if weight is None else (weight * weight)[:, :, None]
            return self.adjoint(out if w2 is None else out * w2)
        _, gc = self.plan.loss_backward(_np(colors), None, None if weight is None
                                        else _np(weight), 0.5, kernel_threads(),
                                        geometry=False)
        return torch.from_numpy(gc)

    def residual(self, colors: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
        """A^T W (target - W A colors) in one pass (the colour solves' starting residual;
        target [H, W, C] already weighted)."""
        if not self.fused:
            out = self.forward(colors)
            if weight is not None:
                out = out * weight[:, :, None]
            r = target - out
            return self.adjoint(r if weight is None else r * weight[:, :, None])
        _, gc = self.plan.loss_backward(_np(colors), _np(target), None if weight is None
                                        else _np(weight), 0.5, kernel_threads(),
                                        geometry=False)
        return -torch.from_numpy(gc)


class FlatFitStep:
    """One geometry of the encoder's flat parameters x [N, 5 + C] (x, y, log2 sigma_1, log2
    sigma_2, theta, the colours: `encoder/adam.FlatParams` without waves) on the fitting
    kernel, for the fit's gradients without autograd: the means and conics formed, the
    squared error and its gradients with respect to means, conics and colours in one call
    (`loss_gradients`), or a render and the gradients of any loss of it (`forward`,
    `backward`), and the chain rule to x's columns, all in the kernel (csrc/fit.h
    flat_geometry, flat_chain): three calls a fit step in place of a dozen small torch
    operations."""

    def __init__(self, x: torch.Tensor, height: int, width: int):
        self.x = _np(x)
        self.plan = extension.kernel().fit_plan_flat(self.x, height, width, kernel_threads())

    def _colors(self, c: int):
        return self.x[:, 5:5 + c]

    def loss_gradients(self, target: torch.Tensor, weight: torch.Tensor | None,
                       scale: float):
        """(loss, g [N, K]) of scale * sum((weight * render - target)^2)."""
        c = target.shape[2]
        loss, gm, gq, gc = self.plan.loss_backward(
            self._colors(c), _np(target), None if weight is None else _np(weight),
            float(scale), kernel_threads())
        return loss, self._chain(gm, gq, gc)

    def forward(self, c: int) -> torch.Tensor:
        """The render [H, W, c] of x's first c colour columns."""
        return torch.from_numpy(self.plan.forward(self._colors(c), kernel_threads()))

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        """g [N, K]: the gradients of sum(render * grad_out) with respect to x's columns."""
        c = grad_out.shape[2]
        gm, gq, gc = self.plan.backward(self._colors(c), _np(grad_out), kernel_threads())
        return self._chain(gm, gq, gc)

    def _chain(self, gm, gq, gc) -> torch.Tensor:
        return torch.from_numpy(extension.kernel().flat_gradients(self.x, gm, gq, gc,
                                                                  kernel_threads()))
