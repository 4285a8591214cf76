"""Inpainting: fitting Gaussians to an image with missing pixels, and filling them.

`encode(image, mask=...)` fits with `HoleAwareFitter`: the data term sees known pixels
only (the pixels under the mask never reach the fit: they are replaced by a fill computed
from known pixels before anything else looks at the image), and

- a cheap multigrid harmonic fill of the hole (`harmonic_fill`, coarse-to-fine Jacobi on
  the Laplace equation with the known pixels as boundary) is computed once; it is the
  prior the hole render is pulled toward (`extra_loss`, together with a small penalty on
  the rendered gradient inside the hole), and the target of the colour solves inside the
  hole, so Gaussians entirely inside the hole keep sensible colours instead of going to 0;
- a share of the Gaussians is placed inside the (dilated) hole (`start`), sized to the
  hole's local half-width so they can span it, and oriented along the edge direction
  continued into the hole: the structure tensor is computed from known pixels only by
  normalised convolution at a scale that reaches across the hole, so edges that meet the
  hole's border are carried through it by elongated Gaussians.

`inpaint(image, mask)` encodes, decodes and pastes the known pixels back.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .fit import FitConfig, Fitter
from .init import _blur, image_gradients, luminance, solve_colors, structure_init, random_init
from .quantize import GaussianParams

# Inpainting defaults (chosen on Kodak with LaMa-style masks: benchmarks/inpaint.py).
INPAINT_DENSITY = 4.0        # Gaussians per 1000 pixels
INPAINT_ITERATIONS = 0          # 0: least-squares start and final colour solve only

HOLE_SHARE_MAX = 0.35        # at most this share of the Gaussians is placed in the hole
PRIOR_WEIGHT = 0.25          # weight of the pull toward the harmonic fill (per hole pixel)
GRAD_WEIGHT = 0.5            # weight of the gradient penalty inside the hole


# ---- helpers on [H,W] / [H,W,C] tensors ---------------------------------------------------
def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    if r <= 0:
        return m
    return F.max_pool2d(m[None, None], 2 * r + 1, stride=1, padding=r)[0, 0]


def hole_distance(hole: torch.Tensor, max_steps: int = 128) -> torch.Tensor:
    """Chessboard distance (pixels) from each hole pixel to the nearest known pixel."""
    dist = torch.zeros_like(hole)
    cur = hole.clone()
    for _ in range(max_steps):
        if not bool(cur.any()):
            break
        dist += cur
        cur = 1.0 - F.max_pool2d((1.0 - cur)[None, None], 3, stride=1, padding=1)[0, 0]
    return dist


def _down(x: torch.Tensor) -> torch.Tensor:
    """[C,H,W] -> half size (odd sides padded by replication), 2x2 mean."""
    h, w = x.shape[-2:]
    x = F.pad(x[None], (0, w % 2, 0, h % 2), mode="replicate")[0]
    return F.avg_pool2d(x[None], 2)[0]


def harmonic_fill(img: torch.Tensor, known: torch.Tensor, iters: int = 12) -> torch.Tensor:
    """Fill the unknown pixels of img [H,W,C] (known [H,W] 0/1) with a smooth
    interpolant of the known ones: coarse-to-fine (known-weighted pyramid); at every level
    Jacobi iterations of the Laplace equation, then damped Jacobi of the biharmonic one."""
    x = (img * known[:, :, None]).permute(2, 0, 1).contiguous()
    k = known[None].clone()
    return _fill_level(x, k, iters).permute(1, 2, 0).contiguous()


def _fill_level(x: torch.Tensor, k: torch.Tensor, iters: int) -> torch.Tensor:
    c, h, w = x.shape
    known = k > 0.999
    if bool(known.all()):
        return x
    if min(h, w) <= 4 or not bool((k > 0).any()):
        tot = float(k.sum())
        mean = (x * k).sum((1, 2)) / tot if tot > 0 else torch.full((c,), 0.5)
        u = torch.where(known, x / k.clamp(min=1e-6), mean[:, None, None].expand(c, h, w))
    else:
        kd = _down(k)
        xd = _down(x * k) / kd.clamp(min=1e-6)
        kc = (kd > 0).float()      # a coarse pixel is known if any of its four is
        coarse = _fill_level(xd * kc, kc, min(4 * iters, 60))  # coarse levels: cheap
        up = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        u = torch.where(known, x, up)
    # Work only on the bounding box of the (2-pixel dilated) hole.
    rows = torch.nonzero((~known[0]).any(1)).flatten()
    cols = torch.nonzero((~known[0]).any(0)).flatten()
    r0, r1 = max(0, int(rows[0]) - 3), min(h, int(rows[-1]) + 4)
    c0, c1 = max(0, int(cols[0]) - 3), min(w, int(cols[-1]) + 4)
    sub, kb = u[:, r0:r1, c0:c1].clone(), known[:, r0:r1, c0:c1].expand(c, r1 - r0, c1 - c0)
    fixed = sub.clone()
    lap = torch.tensor([[0, .25, 0], [.25, 0, .25], [0, .25, 0]])[None, None]
    bih = torch.tensor([[0, 0, -1, 0, 0], [0, -2, 8, -2, 0], [-1, 8, 0, 8, -1],
                        [0, -2, 8, -2, 0], [0, 0, -1, 0, 0]])[None, None] / 20.0
    for _ in range(iters // 2):     # harmonic smoothing, then damped biharmonic Jacobi
        avg = F.conv2d(F.pad(sub[:, None], (1, 1, 1, 1), mode="replicate"), lap)[:, 0]
        sub = torch.where(kb, fixed, avg)
    for _ in range(iters):
        new = F.conv2d(F.pad(sub[:, None], (2, 2, 2, 2), mode="replicate"), bih)[:, 0]
        sub = torch.where(kb, fixed, 0.5 * (sub + new))
    u = u.clone()
    u[:, r0:r1, c0:c1] = sub
    return u


def _blur_big(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [H,W] for large sigma: on a downsampled grid, then upsampled."""
    h, w = x.shape
    f = 1
    while sigma / f > 4 and min(h, w) // (2 * f) >= 8:
        f *= 2
    y = F.avg_pool2d(x[None, None], f, ceil_mode=True)[0, 0] if f > 1 else x
    y = _blur(y, sigma / f)
    if f > 1:
        y = F.interpolate(y[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return y


def known_structure(img: torch.Tensor, known: torch.Tensor, sigma: float):
    """Structure tensor from known pixels only (normalised convolution at scale sigma):
    returns (edge angle, coherence) maps [H,W]; edges run across the gradient."""
    lum = luminance(img) * known
    gx, gy = image_gradients(lum)
    pk = F.pad(known[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    valid = (known * pk[1:-1, 2:] * pk[1:-1, :-2] * pk[2:, 1:-1] * pk[:-2, 1:-1])
    norm = _blur_big(valid, sigma).clamp(min=1e-6)
    jxx, jxy, jyy = (_blur_big(t * valid, sigma) / norm for t in (gx * gx, gx * gy, gy * gy))
    tr_half = 0.5 * (jxx + jyy)
    disc = torch.sqrt(torch.clamp(0.25 * (jxx - jyy) ** 2 + jxy ** 2, min=0))
    l1, l2 = tr_half + disc, torch.clamp(tr_half - disc, min=0)
    grad_angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    coherence = torch.where(l1 + l2 > 1e-12, (l1 - l2) / (l1 + l2 + 1e-12), torch.zeros_like(l1))
    return grad_angle + math.pi / 2, coherence


class HoleAwareFitter(Fitter):
    """Fitter for images with missing pixels (mask: True = unknown)."""

    def __init__(self, image: np.ndarray, cfg: FitConfig, mask: np.ndarray | None = None):
        super().__init__(image, cfg, mask)
        if self.known is None:
            raise ValueError("HoleAwareFitter needs a mask")
        self.hole = 1.0 - self.known
        # The pixels under the mask never reach the fit: replace them by the fill.
        self.fill = harmonic_fill(self.target, self.known).clamp(0, 1)
        k3 = self.known[:, :, None]
        self.target = self.target * k3 + self.fill * (1 - k3)
        self.nhole = float(self.hole.sum())
        self.dist = hole_distance(self.hole)
        self.color_weight = self.known + math.sqrt(PRIOR_WEIGHT) * self.hole
        # Gradient penalty region: pixel pairs with at least one hole pixel.
        self._gx_w = torch.maximum(self.hole[:, 1:], self.hole[:, :-1])
        self._gy_w = torch.maximum(self.hole[1:, :], self.hole[:-1, :])

    # ---- placement ------------------------------------------------------------------------
    def start(self, n: int) -> GaussianParams:
        hole_frac = self.nhole / (self.h * self.w)
        n_hole = int(round(n * min(HOLE_SHARE_MAX, 0.6 * hole_frac)))
        n_hole = min(max(n_hole, 1 if n >= 8 else 0), n - 1)
        init = structure_init if self.cfg.init == "structure" else random_init
        p = init(self.target, n - n_hole, self.gen)
        if n_hole > 0:
            p = GaussianParams.cat(p, self._hole_gaussians(n_hole, n))
        p.color = solve_colors(self.target, p, self.cfg.color_solve_steps, self.color_weight)
        return p

    def _hole_gaussians(self, k: int, n: int) -> GaussianParams:
        region = _dilate(self.hole, 2)
        xy_idx = torch.multinomial(region.flatten().double(), k, replacement=True,
                                   generator=self.gen)
        jitter = torch.rand(k, 2, generator=self.gen)
        xy = torch.stack([(xy_idx % self.w).float(), (xy_idx // self.w).float()], -1) + jitter
        # Local half-width of the hole: the largest distance-to-border nearby.
        halfw = _dilate(self.dist, 3).flatten()[xy_idx].clamp(min=1.0)
        spacing = math.sqrt(float(region.sum()) / k)
        scale = float(self.dist.max().clamp(min=2.0))
        angle, coh = known_structure(self.target, self.known, sigma=min(32.0, max(3.0, scale)))
        coh = coh.flatten()[xy_idx]
        # Long enough to span the hole, but bounded (the render cost grows with the area).
        major = torch.clamp(1.2 * halfw, min=0.7 * spacing, max=2.5 * spacing) * (1 + 0.5 * coh)
        minor = torch.minimum(major, torch.clamp(0.7 * spacing / (1 + coh), min=0.7))
        ls = torch.stack([torch.log2(major), torch.log2(minor)], -1)
        theta = angle.flatten()[xy_idx]
        return GaussianParams(xy, ls.float(), theta.float(), torch.zeros(k, self.c))

    # ---- prior ----------------------------------------------------------------------------
    def extra_loss(self, p: GaussianParams, out: torch.Tensor):
        h3 = self.hole[:, :, None]
        d = (out - self.fill) * h3
        prior = (d * d).sum() / (self.npix * self.c)
        gx = (out[:, 1:] - out[:, :-1]) * self._gx_w[:, :, None]
        gy = (out[1:] - out[:-1]) * self._gy_w[:, :, None]
        grad = ((gx * gx).sum() + (gy * gy).sum()) / (self.npix * self.c)
        return PRIOR_WEIGHT * prior + GRAD_WEIGHT * grad


def inpaint(image, mask, *, keep_known: bool = True, **encode_options) -> np.ndarray:
    """Fill the pixels of `image` marked by `mask` (HxW, nonzero = missing).

    Encodes with the mask (gscodec.encode(image, mask=mask, **encode_options); the
    defaults here are tuned for inpainting: INPAINT_DENSITY Gaussians per 1000 pixels,
    INPAINT_ITERATIONS iterations), decodes, and pastes the known pixels back unless
    keep_known=False (then the result is the pure decode). Returns uint8 HxWxC (HxW for
    grayscale input)."""
    from .codec import _mask_array, decode, default_gaussians, encode
    from .imageio import load_image
    arr = load_image(image)
    h, w, c = arr.shape
    missing = _mask_array(mask, h, w)
    if encode_options.get("gaussians") is None:
        encode_options["gaussians"] = default_gaussians(h, w, INPAINT_DENSITY)
    if encode_options.get("iterations") is None:
        encode_options["iterations"] = INPAINT_ITERATIONS
    data = encode(arr, mask=missing, **encode_options)
    out = decode(data, device=encode_options.get("device", "auto"))
    out = out.reshape(h, w, c).copy()
    if keep_known:
        out[~missing] = arr[~missing]
    return out[:, :, 0] if c == 1 else out
