"""Masked encoding: fitting Gaussians to an image with missing pixels (mask: True =
unknown), so that an ordinary decode of the .gsi fills the hole.

The prior is `anisotropic_fill` (hole_prior.py): the harmonic interpolant of the known
pixels, refined by a diffusion that follows the edges of the known pixels across the hole,
with the colour regions of the border kept apart deep inside a large hole. The pixels under
the mask are never read.

`HoleAwareObjective` fits the whole picture: the data term sees known pixels only (the hole
is replaced by the prior before anything else looks at the image), and
- the prior is what the hole render is pulled toward (`extra_loss`, together with a small
  penalty on the rendered gradient inside the hole), and the target of the colour solves
  inside the hole, so Gaussians entirely inside the hole keep sensible colours;
- a share of the Gaussians is placed inside the (dilated) hole (`start`), sized to the
  hole's local half-width so they can span it, and oriented along the edge direction
  continued into the hole: the structure tensor is computed from known pixels only by
  normalised convolution at a scale that reaches across the hole, so edges that meet the
  hole's border are carried through it by elongated Gaussians.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import FitConfig
from .hole_prior import (  # noqa: F401  (anisotropic_fill, harmonic_fill: re-exported)
    FILL_COARSE,
    anisotropic_fill,
    blur_big,
    csr_counts,
    harmonic_fill,
)
from .init import image_gradients, luminance, random_init, solve_colors, structure_init
from .objective import Objective
from .params import GaussianParams

HOLE_SHARE_MAX = 0.35        # at most this share of the Gaussians is placed in the hole
PRIOR_WEIGHT = 0.25          # weight of the pull toward the prior (per hole pixel)
GRAD_WEIGHT = 0.5            # weight of the gradient penalty inside the hole


# ---- helpers on [H,W] / [H,W,C] tensors ---------------------------------------------------
def dilate(m: torch.Tensor, r: int) -> torch.Tensor:
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


def pair_weights(hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (1 or 0) of the horizontal [H, W-1] and vertical [H-1, W] pixel pairs with
    at least one hole pixel (those under the gradient penalty)."""
    return (torch.maximum(hole[:, 1:], hole[:, :-1]),
            torch.maximum(hole[1:, :], hole[:-1, :]))


def hole_box(hole: torch.Tensor) -> tuple[slice, slice]:
    """Rows and columns of the hole's bounding box grown by one pixel (within the image):
    every pixel of a pair under the gradient penalty is inside."""
    h, w = hole.shape
    rows = torch.nonzero(hole.any(1)).flatten()
    cols = torch.nonzero(hole.any(0)).flatten()
    return (slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)),
            slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)))


def known_structure(img: torch.Tensor, known: torch.Tensor, sigma: float):
    """Structure tensor from known pixels only (normalised convolution at scale sigma):
    returns (edge angle, coherence) maps [H,W]; edges run across the gradient."""
    lum = luminance(img) * known
    gx, gy = image_gradients(lum)
    pk = F.pad(known[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    valid = (known * pk[1:-1, 2:] * pk[1:-1, :-2] * pk[2:, 1:-1] * pk[:-2, 1:-1])
    norm = blur_big(valid, sigma).clamp(min=1e-6)
    jxx, jxy, jyy = (blur_big(t * valid, sigma) / norm for t in (gx * gx, gx * gy, gy * gy))
    tr_half = 0.5 * (jxx + jyy)
    disc = torch.sqrt(torch.clamp(0.25 * (jxx - jyy) ** 2 + jxy ** 2, min=0))
    l1, l2 = tr_half + disc, torch.clamp(tr_half - disc, min=0)
    grad_angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    coherence = torch.where(l1 + l2 > 1e-12, (l1 - l2) / (l1 + l2 + 1e-12), torch.zeros_like(l1))
    return grad_angle + math.pi / 2, coherence


class HoleAwareObjective(Objective):
    """The objective of an image with missing pixels (mask: True = unknown)."""

    def __init__(self, image: np.ndarray, cfg: FitConfig, mask: np.ndarray | None = None):
        super().__init__(image, cfg, mask)
        if self.known is None:
            raise ValueError("HoleAwareObjective needs a mask")
        self.hole = 1.0 - self.known
        # The pixels under the mask never reach the fit: replace them by the fill. The
        # prior and the hole's geometry are computed once, on the CPU.
        # The edge-directed prior (hole_prior.py; docs/experiments.md, Inpainting,
        # "Edge-directed hole prior").
        fill = anisotropic_fill(self.target.cpu(), self.known.cpu())
        self.fill = fill.clamp(0, 1).to(self.device)
        k3 = self.known[:, :, None]
        self.target = self.target * k3 + self.fill * (1 - k3)
        self.nhole = float(self.hole.sum())
        self.dist = hole_distance(self.hole.cpu()).to(self.device)
        self.color_weight = self.known + math.sqrt(PRIOR_WEIGHT) * self.hole
        # Gradient penalty region: pixel pairs with at least one hole pixel.
        self._gx_w, self._gy_w = pair_weights(self.hole)
        self._box = hole_box(self.hole)
        self._box_weights = self._extra_weights()

    # ---- placement ------------------------------------------------------------------------
    def start(self, n: int, gen: torch.Generator) -> GaussianParams:
        hole_frac = self.nhole / (self.h * self.w)
        n_hole = int(round(n * min(HOLE_SHARE_MAX, 0.6 * hole_frac)))
        n_hole = min(max(n_hole, 1 if n >= 8 else 0), n - 1)
        init = structure_init if self.cfg.init == "structure" else random_init
        p = init(self.target, n - n_hole, gen)
        if n_hole > 0:
            p = GaussianParams.cat(p, self._hole_gaussians(n_hole, n, gen))
        p.color = solve_colors(self.target, p, self.cfg.color_solve_steps, self.color_weight)
        return p

    def _hole_gaussians(self, k: int, n: int, gen: torch.Generator) -> GaussianParams:
        region = dilate(self.hole, 2)
        xy_idx = torch.multinomial(region.flatten().double(), k, replacement=True,
                                   generator=gen)
        jitter = torch.rand(k, 2, generator=gen, device=self.device)
        xy = torch.stack([(xy_idx % self.w).float(), (xy_idx // self.w).float()], -1) + jitter
        # Local half-width of the hole: the largest distance-to-border nearby.
        halfw = dilate(self.dist, 3).flatten()[xy_idx].clamp(min=1.0)
        spacing = math.sqrt(float(region.sum()) / k)
        scale = float(self.dist.max().clamp(min=2.0))
        angle, coh = known_structure(self.target.cpu(), self.known.cpu(),
                                     sigma=min(32.0, max(3.0, scale)))
        angle, coh = angle.to(self.device), coh.to(self.device)
        coh = coh.flatten()[xy_idx]
        # Long enough to span the hole, but bounded (the render cost grows with the area).
        major = torch.clamp(1.2 * halfw, min=0.7 * spacing, max=2.5 * spacing) * (1 + 0.5 * coh)
        minor = torch.minimum(major, torch.clamp(0.7 * spacing / (1 + coh), min=0.7))
        ls = torch.stack([torch.log2(major), torch.log2(minor)], -1)
        theta = angle.flatten()[xy_idx]
        return GaussianParams(xy, ls.float(), theta.float(),
                              torch.zeros(k, self.c, device=self.device))

    # ---- prior ----------------------------------------------------------------------------
    def extra_loss(self, p: GaussianParams, out: torch.Tensor):
        h3 = self.hole[:, :, None]
        d = (out - self.fill) * h3
        prior = (d * d).sum() / (self.npix * self.c)
        gx = (out[:, 1:] - out[:, :-1]) * self._gx_w[:, :, None]
        gy = (out[1:] - out[:-1]) * self._gy_w[:, :, None]
        grad = ((gx * gx).sum() + (gy * gy).sum()) / (self.npix * self.c)
        return PRIOR_WEIGHT * prior + GRAD_WEIGHT * grad

    def image_gradient(self, out: torch.Tensor) -> tuple[float, torch.Tensor]:
        """mse(out) and the gradient of mse + extra_loss with respect to the render out, in
        closed form: the extra term's gradient is zero outside the hole's box
        (`hole_box`), so it is computed on that crop alone."""
        mse, g = super().image_gradient(out)
        out = out[self._box]
        prior_w, gx_w, gy_w = self._box_weights
        g_box = g[self._box]
        g_box += (out - self.fill[self._box]).mul_(prior_w)
        ex = (out[:, 1:] - out[:, :-1]).mul_(gx_w)
        ey = (out[1:] - out[:-1]).mul_(gy_w)
        g_box[:, 1:] += ex
        g_box[:, :-1] -= ex
        g_box[1:] += ey
        g_box[:-1] -= ey
        return mse, g

    def _extra_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The factors of extra_loss's gradient on the hole's box: of (render - fill), of the
        horizontal and of the vertical differences (the weights are 0 or 1, so their
        squares are themselves), per channel (faster than broadcast products)."""
        hole = self.hole[self._box]
        gx_w, gy_w = pair_weights(hole)
        scale = 2.0 / (self.npix * self.c)

        def per_channel(w: torch.Tensor, weight: float) -> torch.Tensor:
            return (weight * scale) * w[:, :, None].expand(*w.shape, self.c).contiguous()

        return (per_channel(hole, PRIOR_WEIGHT), per_channel(gx_w, GRAD_WEIGHT),
                per_channel(gy_w, GRAD_WEIGHT))
