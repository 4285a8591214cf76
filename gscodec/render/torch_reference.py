"""Pure-PyTorch reference renderer: the ground truth the compiled backends are tested against.

It follows the contract in `gscodec.render` literally; simple and obviously right beats fast.
The image is processed in TILE x TILE pixel tiles; for each tile only the Gaussians whose
bounding box of the ellipse q <= Q_CUT (widened by one pixel) meets the tile are evaluated,
in blocks small enough that at most about MAX_BLOCK_FLOATS floats of intermediates are live.
When gradients are needed each (tile, block) step is a small autograd Function that saves
only its inputs and recomputes the step under autograd in backward (activation
checkpointing), so memory stays bounded in the backward pass too. (torch.utils.checkpoint
is avoided because its first use imports torch._dynamo, which is slow.)

Waves (format version 5): w = e * (1 + amp * cos((kx*dx + ky*dy) + phase)) with torch.cos
(differentiable in all four wave parts and, through dx, dy, in the means; not the exact
renderers' cos_gsi: within 1e-6 of them). The cosine is evaluated for every Gaussian of a
`waves` tensor, amp == 0 included, so that a fit starting its waves at amplitude 0 gets
their gradients; the value is then e * (1 + 0 * cos) = e exactly.
"""
from __future__ import annotations

import math

import torch

from .common import Q_CUT

TILE = 32
MAX_BLOCK_FLOATS = 16 * 1024 * 1024
_LIVE_TENSORS = 8          # rough count of [n, th, tw] intermediates alive at once


def gaussian_bounds(means: torch.Tensor, conics: torch.Tensor):
    """Per-Gaussian (x0, x1, y0, y1) bounding box of {q <= Q_CUT} widened by one pixel, in
    float64, and the positive-definiteness mask evaluated in float32 exactly as the
    contract says (a > 0 and a*c - b*b > 0). Boxes of non-PD Gaussians are meaningless."""
    m32 = means.detach()
    c32 = conics.detach()
    a, b, c = c32[:, 0], c32[:, 1], c32[:, 2]
    pd = (a > 0) & ((a * c - b * b) > 0)
    a64, b64, c64 = a.double(), b.double(), c.double()
    det = a64 * c64 - b64 * b64
    ok = pd & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    # Half-extents sqrt(Q*Sigma_xx), sqrt(Q*Sigma_yy) with Sigma = conic^-1; infinite where
    # float64 cannot resolve the determinant (then the whole image is a candidate).
    rx = torch.where(ok, torch.sqrt(Q_CUT * c64 / det_safe), torch.full_like(det, math.inf))
    ry = torch.where(ok, torch.sqrt(Q_CUT * a64 / det_safe), torch.full_like(det, math.inf))
    mx, my = m32[:, 0].double(), m32[:, 1].double()
    return (mx - rx - 1.0, mx + rx + 1.0, my - ry - 1.0, my + ry + 1.0), pd


def gaussian_weight(dx, dy, a, b, c):
    """What a pixel at offset (dx, dy) from the mean gets from a Gaussian of conic (a, b, c):
    exp(-q/2) where q <= Q_CUT and the conic is positive definite, else 0 (the contract;
    q in its float32 order)."""
    q = (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy
    keep = (q <= Q_CUT) & (a > 0) & ((a * c - b * b) > 0)
    # exp of a masked-out q could be inf (non-PD) and poison gradients: zero q first.
    return torch.where(keep, torch.exp(-0.5 * torch.where(keep, q, torch.zeros_like(q))),
                       torch.zeros_like(q))


def _tile_contribution(means, conics, colors, waves, x0: int, y0: int, tw: int, th: int):
    """Sum of the Gaussians' contributions over one tile: [th, tw, C] in colors' dtype
    (waves: [n, 4] or None)."""
    dt = colors.dtype
    px = torch.arange(tw, dtype=dt) + (x0 + 0.5)          # pixel-centre x, exact in float32
    py = torch.arange(th, dtype=dt) + (y0 + 0.5)
    mx = means[:, 0].to(dt)[:, None, None]
    my = means[:, 1].to(dt)[:, None, None]
    a = conics[:, 0].to(dt)[:, None, None]
    b = conics[:, 1].to(dt)[:, None, None]
    c = conics[:, 2].to(dt)[:, None, None]
    dx = px[None, None, :] - mx                           # [n, 1, tw]
    dy = py[None, :, None] - my                           # [n, th, 1]
    w = gaussian_weight(dx, dy, a, b, c)                  # [n, th, tw]
    if waves is not None:
        kx, ky, phase, amp = (waves[:, j].to(dt)[:, None, None] for j in range(4))
        w = w * (1.0 + amp * torch.cos((kx * dx + ky * dy) + phase))
    return torch.einsum("nhw,nc->hwc", w, colors)


class _Recompute(torch.autograd.Function):
    """One (tile, block) step that keeps only its inputs and recomputes in backward."""

    @staticmethod
    def forward(ctx, means, conics, colors, waves, x0, y0, tw, th):
        ctx.save_for_backward(means, conics, colors, waves)
        ctx.geom = (x0, y0, tw, th)
        with torch.no_grad():
            return _tile_contribution(means, conics, colors, waves, x0, y0, tw, th)

    @staticmethod
    def backward(ctx, grad):
        inputs = [None if t is None else t.detach().requires_grad_(True)
                  for t in ctx.saved_tensors]
        given = [t for t in inputs if t is not None]
        with torch.enable_grad():
            out = _tile_contribution(*inputs, *ctx.geom)
            grads = iter(torch.autograd.grad(out, given, grad, allow_unused=True))
        grads = [None if t is None else _or_zeros(next(grads), t) for t in inputs]
        return (*grads, None, None, None, None)


def _or_zeros(g, t):
    return torch.zeros_like(t) if g is None else g


def render_reference(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
                     height: int, width: int, waves: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Render [height, width, C] float32 by the contract of `gscodec.render`.
    Differentiable (autograd) with respect to means, conics, colors and waves [N, 4]
    (kx, ky, phase, amp; None: no waves). Computes in float32, or in float64 if any input
    is float64 (for gradcheck)."""
    height, width = int(height), int(width)
    inputs = [t for t in (means, conics, colors, waves) if t is not None]
    dt = torch.float64 if any(t.dtype == torch.float64 for t in inputs) else torch.float32
    means, conics, colors = means.to(dt), conics.to(dt), colors.to(dt)
    n, C = colors.shape[0], colors.shape[1]
    if means.shape != (n, 2) or conics.shape != (n, 3) \
            or (waves is not None and waves.shape != (n, 4)):
        raise ValueError(f"shape mismatch: means {tuple(means.shape)}, "
                         f"conics {tuple(conics.shape)}, colors {tuple(colors.shape)}"
                         + ("" if waves is None else f", waves {tuple(waves.shape)}"))
    (bx0, bx1, by0, by1), pd = gaussian_bounds(means, conics)
    if waves is not None:
        waves = waves.to(dt)
        w = waves.detach()
        pd = pd & (torch.isfinite(w).all(dim=1) | (w[:, 3] == 0))   # a non-finite wave: none
        waves = torch.nan_to_num(waves, nan=0.0, posinf=0.0, neginf=0.0)  # (amp 0: no wave)
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    rows = []
    for y0 in range(0, height, TILE):
        th = min(TILE, height - y0)
        row_sel = pd & (by1 >= y0 + 0.5) & (by0 <= y0 + th - 0.5)
        tiles = []
        for x0 in range(0, width, TILE):
            tw = min(TILE, width - x0)
            sel = row_sel & (bx1 >= x0 + 0.5) & (bx0 <= x0 + tw - 0.5)
            idx = torch.nonzero(sel).flatten()
            acc = torch.zeros(th, tw, C, dtype=dt)
            block = max(1, MAX_BLOCK_FLOATS // (_LIVE_TENSORS * th * tw))
            for s in range(0, idx.numel(), block):
                bi = idx[s:s + block]
                args = (means[bi], conics[bi], colors[bi],
                        None if waves is None else waves[bi], x0, y0, tw, th)
                if need_grad:
                    part = _Recompute.apply(*args)
                else:
                    part = _tile_contribution(*args)
                acc = acc + part
            tiles.append(acc)
        rows.append(torch.cat(tiles, dim=1))
    if not rows:
        return torch.zeros(height, width, C, dtype=dt)
    return torch.cat(rows, dim=0)


# ---- the backend surface (gscodec.render.backends): "torch_reference" -----------------------

def available() -> bool:
    return True


def unavailable_reason() -> str | None:
    return None


render = render_reference


class AutogradColorOperator:
    """Colours -> image for fixed geometry and its adjoint, through `render_fn` and
    autograd (the image is linear in the colours)."""

    def __init__(self, means, conics, height, width, render_fn=render_reference, waves=None):
        self.args = (means.detach(), conics.detach())
        self.size = (int(height), int(width))
        self.render_fn = render_fn
        # (only a wave-drawing render_fn gets waves: the others keep their signature)
        self.extra = () if waves is None else (waves.detach(),)

    def forward(self, colors):
        with torch.no_grad():
            return self.render_fn(*self.args, colors, *self.size, *self.extra)

    def adjoint(self, v):
        with torch.enable_grad():
            col = torch.zeros(self.args[0].shape[0], v.shape[-1], device=v.device,
                              requires_grad=True)
            out = self.render_fn(*self.args, col, *self.size, *self.extra)
            (g,) = torch.autograd.grad(out, col, grad_outputs=v)
        return g


def color_operator(means, conics, height: int, width: int, waves=None):
    return AutogradColorOperator(means, conics, height, width, waves=waves)
