"""Where the Gaussians start before fitting.

- `random_init`: uniform positions, isotropic Gaussians sized by the mean spacing (the
  generic GaussianImage-style start, kept as `--init random`).
- `structure_init`: positions drawn from a density that follows image structure (smoothed
  gradient energy blended with a uniform share so flat regions are still covered), sizes
  from the local spacing of that density, orientation from the structure tensor (long
  along edges, thin across), colours solved by least squares (`solve_colors`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..bitstream.model import COLOR_RANGE
from ..render import color_operator, render, resolve_backend
from .params import GaussianParams

UNIFORM_SHARE = 0.3      # Image-GS: 30 % uniform, 70 % by squared gradient
SIGMA_SPACING = 0.6      # initial sigma as a multiple of the local point spacing
ELONGATION = 1.5         # axis ratio 1 + ELONGATION * coherence


def luminance(img: torch.Tensor) -> torch.Tensor:
    """[H,W,C] in 0..1 -> [H,W] luma (alpha, if any, is ignored)."""
    c = img.shape[2]
    if c >= 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device)
        return img[:, :, :3] @ w
    return img[:, :, 0]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a [H,W] map (replicated border)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[None, None], (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, k[None, None, None, :]), k[None, None, :, None])
    return y[0, 0]


def image_gradients(lum: torch.Tensor):
    """Central differences (replicate border) of a [H,W] map."""
    p = F.pad(lum[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    gx = 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])
    gy = 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1])
    return gx, gy


def structure_maps(img: torch.Tensor, smooth: float = 1.5):
    """Density weights (gradient energy) and the structure tensor's orientation/coherence."""
    lum = luminance(img)
    gx, gy = image_gradients(lum)
    jxx, jxy, jyy = (blur(t, smooth) for t in (gx * gx, gx * gy, gy * gy))
    energy = jxx + jyy
    # Eigen-decomposition of the 2x2 structure tensor.
    tr_half = 0.5 * (jxx + jyy)
    disc = torch.sqrt(torch.clamp(0.25 * (jxx - jyy) ** 2 + jxy ** 2, min=0))
    l1, l2 = tr_half + disc, torch.clamp(tr_half - disc, min=0)
    grad_angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)       # direction of strongest change
    coherence = torch.where(l1 + l2 > 1e-12, (l1 - l2) / (l1 + l2 + 1e-12), torch.zeros_like(l1))
    return energy, grad_angle, coherence


def sample_positions(density: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    h, w = density.shape
    p = density.flatten().double()
    idx = torch.multinomial((p / p.sum()).to(gen.device), n, replacement=True,
                            generator=gen).to(density.device)
    jitter = torch.rand(n, 2, generator=gen, dtype=torch.float64, device=gen.device)
    jitter = jitter.to(density.device)
    x = (idx % w).double() + jitter[:, 0]
    y = torch.div(idx, w, rounding_mode="floor").double() + jitter[:, 1]
    return torch.stack([x, y], -1).float(), idx


def random_init(img: torch.Tensor, n: int, gen: torch.Generator) -> GaussianParams:
    h, w, c = img.shape
    dev = img.device
    xy = torch.rand(n, 2, generator=gen, device=gen.device).to(dev) \
        * torch.tensor([float(w), float(h)], device=dev)
    sigma = 0.5 * math.sqrt(h * w / n)
    log2_sigma = torch.full((n, 2), math.log2(max(sigma, 0.25)), device=dev)
    theta = torch.rand(n, generator=gen, device=gen.device).to(dev) * math.pi
    params = GaussianParams(xy, log2_sigma, theta, torch.zeros(n, c, device=dev))
    params.color = _sampled_colors(img, params)
    return params


def structure_init(img: torch.Tensor, n: int, gen: torch.Generator,
                   uniform_share: float | None = None) -> GaussianParams:
    h, w, c = img.shape
    uniform_share = UNIFORM_SHARE if uniform_share is None else uniform_share
    energy, grad_angle, coherence = structure_maps(img)
    e = energy / energy.sum() if float(energy.sum()) > 0 else torch.zeros_like(energy)
    density = (1 - uniform_share) * e + uniform_share / (h * w)
    if float(energy.sum()) <= 0:
        density = torch.full_like(energy, 1.0 / (h * w))
    xy, idx = sample_positions(density, n, gen)
    # Local spacing: with n points drawn at density p (per pixel), the mean area per point
    # is 1/(n p); a Gaussian of sigma ~ 0.6 * sqrt(area) overlaps its neighbours smoothly.
    dens = blur(density, 4.0).flatten()[idx]
    area = 1.0 / (n * dens.clamp(min=1e-12))
    sigma = SIGMA_SPACING * torch.sqrt(area)
    sigma = sigma.clamp(0.4, 0.5 * max(h, w))
    # Elongate along edges where the structure tensor is coherent, keeping the area.
    coh = coherence.flatten()[idx]
    elong = 1.0 + ELONGATION * coh
    log2_sigma = torch.stack([torch.log2(sigma * elong.sqrt()),
                              torch.log2(sigma / elong.sqrt())], -1)
    # Major axis along the edge, i.e. perpendicular to the gradient.
    theta = grad_angle.flatten()[idx] + math.pi / 2
    params = GaussianParams(xy, log2_sigma.float(), theta.float(),
                            torch.zeros(n, c, device=img.device))
    params.color = _sampled_colors(img, params)
    return params


def _sampled_colors(img: torch.Tensor, p: GaussianParams) -> torch.Tensor:
    """Colour at each Gaussian's centre divided by the local coverage (the sum renders
    overlapping Gaussians additively)."""
    h, w, c = img.shape
    ones = torch.ones(p.count, 1, device=img.device)
    with torch.no_grad():
        cover = render(p.pos, p.conics(), ones, h, w)[:, :, 0]
    ix = p.pos[:, 0].long().clamp(0, w - 1)
    iy = p.pos[:, 1].long().clamp(0, h - 1)
    cov = cover[iy, ix].clamp(min=0.3)
    return img[iy, ix] / cov[:, None]


def wave_backend(backend: str, means: torch.Tensor) -> str:
    """The backend to render a set with waves: `backend` resolved, or the torch reference
    where the compiled kernel has no waves."""
    name = resolve_backend(backend, means)
    if name == "kernel":
        from ..render import kernel_torch
        if not getattr(kernel_torch, "SUPPORTS_WAVES", False):
            return "torch_reference"
    return name


def render_params(p: GaussianParams, h: int, w: int, backend: str = "auto") -> torch.Tensor:
    """render() of a set of Gaussians (with its waves, if any)."""
    waves = p.waves()
    if waves is None:
        return render(p.pos, p.conics(), p.color, h, w, backend=backend)
    return render(p.pos, p.conics(), p.color, h, w, waves=waves,
                  backend=wave_backend(backend, p.pos))


def color_operator_params(p: GaussianParams, h: int, w: int, backend: str = "auto"):
    """color_operator() of the geometry (and waves, if any) of a set of Gaussians."""
    waves = p.waves()
    if waves is None:
        return color_operator(p.pos.detach(), p.conics().detach(), h, w, backend=backend)
    return color_operator(p.pos.detach(), p.conics().detach(), h, w, waves=waves.detach(),
                          backend=wave_backend(backend, p.pos))


def color_adjoint(p: GaussianParams, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """A^T v, where A maps the colours [N, C] of p to the rendered image (the rendering is
    linear in colour), for an image-shaped v."""
    h, w, _ = v.shape
    return color_operator_params(p, h, w, backend).adjoint(v)


def solve_colors(img: torch.Tensor, p: GaussianParams, steps: int = 12,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares colours for fixed geometry by conjugate gradients on the normal
    equations (the rendering is linear in colour). `weight` [H,W] weighs each pixel's
    error (0/1: the known pixels). Starts from p.color.

    The iteration stops early (keeping the last iterate) if an iterate leaves the colour
    range of the format or is not finite: with many overlapping Gaussians (e.g. a 1-pixel
    wide image) the normal equations are near-singular and float32 CG can diverge to
    colours of 1e14 that cancel, which quantization then turns into noise."""
    h, w, c = img.shape
    op = color_operator_params(p, h, w)
    target = img * weight[:, :, None] if weight is not None else img
    x = p.color.detach().clone()
    with torch.no_grad():
        r = _residual(op, x, target, weight)
    d = r.clone()
    rs = (r * r).sum(0)
    for _ in range(steps):
        ad = _normal(op, d, weight)
        with torch.no_grad():
            dad = (d * ad).sum(0).clamp(min=1e-20)
            alpha = rs / dad
            x_new = x + alpha * d
            lo, hi = COLOR_RANGE
            ok = torch.isfinite(x_new).all() & (x_new.min() >= lo) & (x_new.max() <= hi) \
                if x_new.numel() else torch.tensor(True)
            if not bool(ok):
                break
            x = x_new
            r = r - alpha * ad
            rs_new = (r * r).sum(0)
            if float(rs_new.max()) < 1e-12:
                break
            d = r + (rs_new / rs.clamp(min=1e-30)) * d
            rs = rs_new
    return x


# A conjugate-gradient step's A^T W^2 A d in one fused pass of the fitting kernel where the
# operator has it (`PlanColorOperator.normal`): 0.6x the time of adjoint(forward(d))
# (Fitting, 2026-12-05 and 2026-12-06, issue 30); the others' through forward and adjoint.
def _normal(op, d: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if hasattr(op, "normal"):
        return op.normal(d, weight)
    out = op.forward(d)
    return op.adjoint(out if weight is None else out * (weight * weight)[:, :, None])


def _residual(op, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
              ) -> torch.Tensor:
    """A^T W (target - W A x), target already weighted."""
    if hasattr(op, "residual"):
        return op.residual(x, target, weight)
    out = op.forward(x)
    r = target - (out if weight is None else out * weight[:, :, None])
    return op.adjoint(r if weight is None else r * weight[:, :, None])
