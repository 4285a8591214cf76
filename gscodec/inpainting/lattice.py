"""The local inpainting fit behind `gscodec.inpaint`: Gaussians only where they matter, on
lattices over the hole and a one-pixel ring of known pixels (spacing LATTICE_SPACING next
to the border, doubling with the distance to it, sigma = LATTICE_SIGMA * spacing on the
finest lattice and LATTICE_SIGMA_DEEP * spacing on the coarser ones, where a lattice
ripple would show; geometry on the .gsi quantization grid). Their colours are the
weighted least-squares fit to the ring's known pixels and to the edge-directed prior in the
hole (sparse design matrices built straight from the lattice geometry, a checkerboard of
the pixels, a few preconditioned conjugate-gradient steps from a quasi-interpolation
start); the hole is then filled by the decoder's renderer drawing those quantized
Gaussians (`inpaint_gaussians` returns them as a masked QuantizedGaussians). The work
grows with the hole, not with the image.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream.model import COLOR_RANGE, QuantClass
from ..encoder.hole_prior import anisotropic_fill, csr_counts
from ..encoder.params import GaussianParams
from ..encoder.quantize import QuantConfig, to_integers
from ..render.common import Q_CUT

LATTICE_SPACING = 3        # spacing (pixels) of the finest Gaussians, next to the hole's border
LATTICE_SIGMA = 0.5        # sigma / spacing
LATTICE_SIGMA_DEEP = 0.7   # sigma / spacing of the coarser lattices inside the hole
LATTICE_REACH = 2.0        # spacing s covers hole pixels up to REACH * s from the border; deeper
LATTICE_MAX_SPACING = 32   #   ones get Gaussians twice as far apart and twice as large
RING = 1                   # known pixels within RING of the hole are fitted too (context)
RING_WEIGHT = 0.1          # their weight relative to the hole's pixels
LS_DAMPING = 0.05          # damping of the colour solve toward its start (x mean diagonal)
LS_ITERATIONS = 30         # conjugate-gradient iterations of the colour least squares (3: terraces)


def _maxpool_sep(x: torch.Tensor, r: int) -> torch.Tensor:
    """Dilation of a [H,W] 0/1 map by a (2r+1)^2 square (separable)."""
    if r <= 0:
        return x
    y = F.max_pool2d(x[None, None], (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(y, (2 * r + 1, 1), stride=1, padding=(r, 0))[0, 0]


def _dilate_known(known: torch.Tensor, r: int) -> torch.Tensor:
    """Pixels within chessboard distance r of a known pixel (approximately, on a grid
    coarsened by up to r/4 for large r: the levels below need no exact distances)."""
    h, w = known.shape
    f = max(1, r // 3)
    if f == 1:
        return _maxpool_sep(known, r) > 0.5
    kc = F.max_pool2d(known[None, None], f, stride=f, ceil_mode=True)[0, 0]
    kc = _maxpool_sep(kc, -(-r // f))
    return (kc.repeat_interleave(f, 0).repeat_interleave(f, 1)[:h, :w]) > 0.5


def _lattice_levels(hole: torch.Tensor, s0: int):
    """Spacing level of every pixel to fit: 0 next to the border (and in the known ring),
    l where the chessboard distance to the nearest known pixel exceeds REACH * s0 * 2^(l-1)."""
    known = (~hole).float()
    level = torch.zeros(hole.shape, dtype=torch.long)
    spacings = [s0]
    while spacings[-1] * 2 <= min(max(LATTICE_MAX_SPACING, s0), *hole.shape):
        reach = int(round(LATTICE_REACH * spacings[-1]))
        deep = hole & ~_dilate_known(known, reach)
        if not bool(deep.any()):
            break
        level += deep.long()
        spacings.append(spacings[-1] * 2)
    return level, spacings


def _offsets(frac_x: float, frac_y: float, sigma: float):
    """Pixel offsets (oy, ox) in raster order and weights exp(-q/2), q <= Q_CUT, of an
    isotropic Gaussian centred at (j0 + frac_x, i0 + frac_y) relative to pixel (i0, j0)."""
    k = int(math.ceil(math.sqrt(Q_CUT) * sigma)) + 1
    o = torch.arange(-k, k + 1)
    oy, ox = torch.meshgrid(o, o, indexing="ij")
    dx = (ox.float() + 0.5) - frac_x
    dy = (oy.float() + 0.5) - frac_y
    q = (dx * dx + dy * dy) / (sigma * sigma)
    keep = (q <= Q_CUT).flatten()
    return oy.flatten()[keep], ox.flatten()[keep], torch.exp(-0.5 * q.flatten()[keep])


class _Level:
    """One lattice of isotropic Gaussians (spacing s, sigma) and its two sparse matrices
    against the fit pixels: A (pixels x Gaussians) and its transpose, each built in
    sorted order directly (no sort) from the lattice's fixed geometry.

    fit_pad: [H+2P, W+2P] row number of each fit pixel, -1 elsewhere (P: margin >= the
    footprint radius); sw: [npix] square roots of the fit weights."""

    def __init__(self, cells: torch.Tensor, s: int, sigma_log2: float, fit_pad: torch.Tensor,
                 pad: int, sw: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, h: int, w: int):
        sigma = 2.0 ** sigma_log2
        hc, wc = cells.shape
        # Lattice points at (cx * s, cy * s): the top and left edges of the image carry
        # Gaussians, so the sum does not sag there; points past the image are dropped.
        hc, wc = cells.shape
        cells = cells.clone()
        cells[torch.arange(hc) * s > h] = False
        cells[:, torch.arange(wc) * s > w] = False
        cy, cx = torch.nonzero(cells, as_tuple=True)
        self.n = n = cy.numel()
        self.xy = torch.stack([cx.float() * s, cy.float() * s], -1)
        self.log2_sigma = torch.full((n,), sigma_log2)
        npix = int(fy.numel())
        half = 0.0
        j0 = 0
        wp = w + 2 * pad
        # Gaussian-major (A^T): the same pixel offsets for every Gaussian of the lattice.
        oy, ox, v = _offsets(half - j0, half - j0, sigma)
        base = (cy * s + j0 + pad) * wp + (cx * s + j0 + pad)
        r = fit_pad.flatten()[base[:, None] + (oy * wp + ox)[None]]       # [n, K]
        ok = r >= 0
        if sw is None:
            tab = torch.where(ok, v[None], torch.zeros(()))
        else:
            tab = torch.where(ok, v[None] * sw[r.clamp(min=0)], torch.zeros(()))
        self.diag = (tab * tab).sum(1)
        self.at = csr_counts(ok.sum(1), r[ok], tab[ok], (n, npix))
        # Pixel-major (A): a pixel's lattice neighbours and weights depend only on its
        # residue class (i mod s, j mod s): one padded offset table per class.
        rr = int(math.ceil(math.sqrt(Q_CUT) * sigma / s)) + 1
        d = torch.arange(-rr, rr + 1)
        dgy, dgx = torch.meshgrid(d, d, indexing="ij")
        dgy, dgx = dgy.flatten(), dgx.flatten()
        a = torch.arange(s).float()
        qy = ((dgy[None].float() * s + half) - (a[:, None] + 0.5)) ** 2 / (sigma * sigma)
        qx = ((dgx[None].float() * s + half) - (a[:, None] + 0.5)) ** 2 / (sigma * sigma)
        qc = (qy[:, None, :] + qx[None, :, :]).reshape(s * s, -1)          # [s*s, K]
        okc = qc <= Q_CUT
        kmax = int(okc.sum(1).max())
        order = torch.argsort((~okc).to(torch.int8), dim=1, stable=True)[:, :kmax]
        wcp = wc + 2 * rr
        cls_off = torch.where(torch.gather(okc, 1, order), (dgy * wcp + dgx)[order],
                              torch.full((), -(hc + 2 * rr) * wcp))     # invalid: no cell
        cls_v = torch.exp(-0.5 * torch.gather(qc, 1, order))
        gid = torch.full((hc + 2 * rr, wcp), -1, dtype=torch.long)
        gid[cy + rr, cx + rr] = torch.arange(n)
        gflat = torch.cat([gid.flatten(), torch.full((1,), -1, dtype=torch.long)])
        # Pixels near this lattice only (its cells dilated by the footprint's reach).
        near = F.max_pool2d(cells.float()[None, None], 2 * rr + 1, stride=1, padding=rr)[0, 0]
        sel = near[fy // s, fx // s] > 0.5                    # fy, fx: the fit pixels
        rows_sel = torch.nonzero(sel).flatten()               # raster order = row order
        iy, ix = fy[rows_sel], fx[rows_sel]
        cls = (iy % s) * s + (ix % s)
        cbase = (iy // s + rr) * wcp + (ix // s + rr)
        idx = cbase[:, None] + cls_off[cls]
        g = gflat[torch.where(idx >= 0, idx, torch.full((), gflat.numel() - 1))]
        inb = g >= 0
        cnt = inb.sum(1)
        counts = torch.zeros(npix, dtype=torch.long)
        counts[rows_sel] = cnt
        vals = cls_v[cls][inb]
        if sw is not None:
            vals = vals * sw[rows_sel].repeat_interleave(cnt)
        self.a = csr_counts(counts, g[inb], vals, (npix, n))


def _lattice_fit(filled: torch.Tensor, hole: torch.Tensor, s0: int, iterations: int):
    """Isotropic Gaussians on lattices around and inside the hole, colours by weighted
    least squares against `filled` (known pixels of the ring, the prior in the
    hole). Returns GaussianParams (geometry already on the .gsi quantization grid)."""
    h, w, c = filled.shape
    fit = _maxpool_sep(hole.float(), RING) > 0.5
    level, spacings = _lattice_levels(hole, s0)
    ys_all = torch.arange(h)[:, None]
    xs_all = torch.arange(w)[None, :]
    weight = torch.zeros(h, w)
    cell_maps = []
    for lv, s in enumerate(spacings):
        ind = fit & (level == lv)
        # The fit sees a subsample of the pixels: a checkerboard (every pixel is within
        # one step of a fitted one; Gaussians of sigma >= 1.5 px cannot tell), and a
        # sparser grid deep in the hole. Weights: the pixels each one stands for, halved.
        st = max(1, s // 4)
        if st > 1:
            weight[ind & (ys_all % st == 0) & (xs_all % st == 0)] = 0.5 * st * st
        elif s >= 3:
            weight[ind & ((ys_all + xs_all) % 2 == 0)] = 1.0
        else:                                  # small Gaussians (a large budget): all
            weight[ind] = 0.5
        # cell (gy, gx): the pixels nearest to the lattice point (gx * s, gy * s)
        o = s // 2
        cells = F.max_pool2d(F.pad(ind.float(), (o, 0, o, 0))[None, None], s, stride=s,
                             ceil_mode=True)[0, 0]
        # Every level is dilated by one cell, the finest included (chosen on Kodak masks in
        # commit fe29851).
        cells = F.max_pool2d(cells[None, None], 3, stride=1, padding=1)[0, 0]
        cell_maps.append(cells > 0.5)
    if RING_WEIGHT != 1.0:
        weight = torch.where(hole, weight, weight * RING_WEIGHT)
    wflat = weight.flatten()
    pix = torch.nonzero(wflat > 0).flatten()
    npix = pix.numel()
    sig_max = max(LATTICE_SIGMA, LATTICE_SIGMA_DEEP) * spacings[-1] * 1.1
    pad = int(math.ceil(math.sqrt(Q_CUT) * sig_max)) + 2
    fit_pad = torch.full((h + 2 * pad, w + 2 * pad), -1, dtype=torch.long)
    fit_pad[pad:pad + h, pad:pad + w] = torch.full((h * w,), -1, dtype=torch.long).index_put_(
        (pix,), torch.arange(npix)).view(h, w)
    sw = wflat[pix].sqrt()
    target = filled.reshape(-1, c)[pix] * sw[:, None]
    sw_lv = None if bool((sw == 1).all()) else sw
    levels = []
    for cells, s in zip(cell_maps, spacings, strict=True):
        # sigma on the file's grid (1/16 octave): the fit sees what the decoder renders
        ls = round(math.log2((LATTICE_SIGMA if s == s0 else LATTICE_SIGMA_DEEP) * s) * 16) / 16
        lvl = _Level(cells, s, ls, fit_pad, pad, sw_lv, pix // w, pix % w, h, w)
        if lvl.n:
            levels.append(lvl)
    sizes = [lv.n for lv in levels]
    n = sum(sizes)

    def normal(p):        # (A^T A) p
        parts = p.split(sizes)
        ap = sum(lv.a @ q for lv, q in zip(levels, parts, strict=True))
        return torch.cat([lv.at @ ap for lv in levels])

    def adjoint(r):
        return torch.cat([lv.at @ r for lv in levels])

    diag = torch.cat([lv.diag for lv in levels])
    # Damping toward the start (not toward 0, which would darken): a Gaussian that few
    # fitted pixels see (a small hole, the image's edge) keeps its start colour instead
    # of taking whatever value fits those few pixels.
    lam = LS_DAMPING * float(diag.mean())
    diag = (diag + lam)[:, None]
    rhs = adjoint(target)
    # Start: each Gaussian's weighted mean of the target, divided by its coverage.
    col = rhs / adjoint(sum(lv.a @ torch.ones(lv.n, 1) for lv in levels)).clamp(min=1e-6)
    res = rhs - normal(col)
    z = res / diag
    p = z.clone()
    ones = torch.ones(n)
    rz = ones @ (res * z)
    for _ in range(iterations):
        ap = normal(p) + lam * p
        alpha = rz / (ones @ (p * ap)).clamp(min=1e-30)
        col = col + alpha * p
        res = res - alpha * ap
        z = res / diag
        rz_new = ones @ (res * z)
        p = z + (rz_new / rz.clamp(min=1e-30)) * p
        rz = rz_new
    lo, hi = COLOR_RANGE
    col = col.clamp(lo, hi)
    xy = torch.cat([lv.xy for lv in levels])
    ls = torch.cat([lv.log2_sigma for lv in levels])
    return GaussianParams(xy, torch.stack([ls, ls], -1), torch.zeros(n), col)


def inpaint_gaussians(image: np.ndarray, missing: np.ndarray, *, gaussians: int | None = None,
                      iterations: int | None = None):
    """The local fit behind `inpaint`: Gaussians around and inside the hole only, as a
    masked QuantizedGaussians for the whole canvas (no Gaussian far from the hole).
    image: HxWxC uint8; missing: HxW bool. gaussians: approximate budget (sets the
    lattice spacing); default: LATTICE_SPACING."""
    h, w, c = image.shape
    hole = torch.from_numpy(np.ascontiguousarray(missing))
    img = torch.from_numpy(image.astype(np.float32) / 255.0)
    filled = anisotropic_fill(img, (~hole).float())
    s0 = LATTICE_SPACING
    if gaussians is not None:
        # The count falls as 1/s0^2 (the finest lattice dominates): one rescale.
        area = float((_maxpool_sep(hole.float(), RING) > 0.5).sum())
        s0 = int(min(max(1, round(math.sqrt(area / max(1, gaussians)))), LATTICE_MAX_SPACING))
    s0 = min(s0, h, w)          # a cell's centre must lie in the image
    p = _lattice_fit(filled, hole, s0, LS_ITERATIONS if iterations is None else iterations)
    # The format's default steps: the encoder's (quantize.ENCODER_CLASS) were not measured here.
    return to_integers(p, QuantConfig((QuantClass(),)), w, h, masked=True)
