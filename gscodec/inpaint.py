"""Inpainting: fitting Gaussians to an image with missing pixels, and filling them.

Both paths start from the same prior: `harmonic_fill`, the harmonic interpolant of the
known pixels (discrete Laplace equation with the known pixels as boundary; the MMSE
linear estimate under a 1/f^2 image spectrum, and unlike the biharmonic one it cannot
overshoot), solved by conjugate gradients on the hole pixels only, started from the
solution one pyramid level coarser. The pixels under the mask are never read.

`inpaint(image, mask)` (keep_known=True, the default) is a local masked fit: Gaussians
only where they matter, on lattices over the hole and a one-pixel ring of known pixels
(spacing LATTICE_SPACING next to the border, doubling with the distance to it, sigma =
LATTICE_SIGMA * spacing on the finest lattice and LATTICE_SIGMA_DEEP * spacing on the
coarser ones, where a lattice ripple would show; geometry on the .gsi quantization
grid). Their colours are the weighted least-squares fit to the ring's known pixels and
to the prior in the hole (sparse design matrices built straight from the lattice
geometry, a checkerboard of the pixels, a few preconditioned conjugate-gradient steps
from a quasi-interpolation start); the hole is then filled by
the decoder's renderer drawing those quantized Gaussians (`inpaint_gaussians` returns them
as a masked QuantizedGaussians). The work grows with the hole, not with the image.

`encode(image, mask=...)` (and `inpaint(..., keep_known=False)`) fits the whole picture
with `HoleAwareFitter`, so that an ordinary decode of the .gsi fills the hole: the data
term sees known pixels only (the hole is replaced by the prior before anything else looks
at the image), and
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
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .fit import FitConfig, Fitter
from .init import _blur, image_gradients, luminance, solve_colors, structure_init, random_init
from .model import COLOR_RANGE
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


FILL_ITERATIONS = 10     # conjugate-gradient iterations per pyramid level (fine levels)
FILL_COARSE = 4096       # below this many unknowns a level is solved without a coarser one


def harmonic_fill(img: torch.Tensor, known: torch.Tensor, iters: int | None = None
                  ) -> torch.Tensor:
    """Fill the unknown pixels of img [H,W,C] (known [H,W], 1 = known) with the harmonic
    interpolant of the known ones: the solution of the discrete Laplace equation (5-point
    stencil, mirror border) with the known pixels as Dirichlet boundary. Solved by
    conjugate gradients on the unknown pixels only, started from the solution one pyramid
    level coarser (a coarse pixel is known if any of its four is), so the work grows with
    the hole's area, not the image's. Unknown input values are never read."""
    hole = known < 0.5
    x = img * (~hole)[:, :, None]
    return _fill_level(x, hole, FILL_ITERATIONS if iters is None else iters)


def _half(x: torch.Tensor) -> torch.Tensor:
    """[H,W,C] -> [ceil(H/2), ceil(W/2), C], 2x2 sums (odd sides padded with zeros)."""
    h, w, c = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return x.view(x.shape[0] // 2, 2, x.shape[1] // 2, 2, c).sum((1, 3))


def _fill_level(x: torch.Tensor, hole: torch.Tensor, iters: int) -> torch.Tensor:
    """x [H,W,C] with zeros in the hole -> x with the hole filled."""
    h, w, c = x.shape
    n = int(hole.sum())
    if n == 0:
        return x
    idx = torch.nonzero(hole.flatten()).flatten()
    if n > FILL_COARSE and min(h, w) >= 8:
        both = _half(torch.cat([x, (~hole).float()[:, :, None]], 2))   # sums, known count
        kd = both[:, :, c:]
        hole_c = kd[:, :, 0] <= 0
        coarse = _fill_level(both[:, :, :c] / kd.clamp(min=1.0), hole_c, iters)
        wc = coarse.shape[1]
        start = coarse.reshape(-1, c)[(idx // w // 2) * wc + (idx % w) // 2]
        steps = iters
    else:
        start = (x.sum((0, 1)) / float(h * w - n)).expand(n, c).clone()
        steps = max(iters, int(4 * math.sqrt(n)) + 20)        # no coarse start: converge
    out = x.reshape(-1, c).clone()
    out[idx] = _harmonic_cg(x, hole, idx, start, steps)
    return out.view(h, w, c)


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape) -> torch.Tensor:
    """CSR matrix from entries whose rows are sorted ascending."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, vals.float(), size=shape)


def _csr_counts(counts: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape):
    """CSR matrix from the entries of each row in turn (counts: entries per row)."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, vals.float(), size=shape)


def _harmonic_cg(x, hole, idx, u, steps, tol=1e-5):
    """Conjugate gradients (Jacobi preconditioned) for L u = b on the hole pixels idx
    (x [H,W,C]: known values, zeros in the hole): L = degree - adjacency among hole
    pixels, b = sum of the known 4-neighbours; the image border is a mirror."""
    h, w, c = x.shape
    n = idx.numel()
    wp = w + 2
    # Padded maps: row number of each hole pixel (n: known, n + 1: outside the image).
    pos = torch.full((h + 2, wp), n + 1, dtype=torch.long)
    inner = torch.full((h * w,), n, dtype=torch.long)
    inner[idx] = torch.arange(n)
    pos[1:-1, 1:-1] = inner.view(h, w)
    pos = pos.flatten()
    xpad = F.pad(x, (0, 0, 1, 1, 1, 1)).reshape(-1, c)
    ip = (idx // w + 1) * wp + (idx % w + 1)
    cols, b = [], 0
    for off in (-wp, -1, 0, 1, wp):                  # column order within a row
        if off == 0:
            cols.append(torch.arange(n))
            continue
        cols.append(pos[ip + off])
        b = b + xpad[ip + off]
    cols = torch.stack(cols, 1)                                  # [n, 5]
    deg = (cols <= n).sum(1).float() - 1.0
    vals = torch.full((n, 5), -1.0)
    vals[:, 2] = deg
    keep = cols < n
    lap = _csr_counts(keep.sum(1), cols[keep], vals[keep], (n, n))
    dinv = (1.0 / deg)[:, None]
    ones = torch.ones(n)
    r = b - lap @ u
    z = r * dinv
    p = z.clone()
    rz = ones @ (r * z)                     # column sums (a matrix product: fast)
    thresh = (tol * tol) * n
    for _ in range(steps):
        if float(rz.max()) <= thresh:
            break
        ap = lap @ p
        alpha = rz / (ones @ (p * ap)).clamp(min=1e-30)
        u.addcmul_(p, alpha)
        r.addcmul_(ap, alpha, value=-1.0)
        torch.mul(r, dinv, out=z)
        rz_new = ones @ (r * z)
        p.mul_(rz_new / rz.clamp(min=1e-30)).add_(z)
        rz = rz_new
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


# ---- inpaint: a local Gaussian fit around the hole -----------------------------------------
LATTICE_SPACING = 3        # spacing (pixels) of the finest Gaussians, next to the hole's border
LATTICE_SIGMA = 0.5        # sigma / spacing
LATTICE_SIGMA_DEEP = 0.7   # sigma / spacing of the coarser lattices inside the hole
LATTICE_REACH = 2.0        # spacing s covers hole pixels up to REACH * s from the border; deeper
LATTICE_MAX_SPACING = 32   #   ones get Gaussians twice as far apart and twice as large
RING = 1                   # known pixels within RING of the hole are fitted too (context)
RING_WEIGHT = 0.1          # their weight relative to the hole's pixels
DILATE0 = True
LS_DAMPING = 0.05          # damping of the colour solve toward its start (x mean diagonal)
LS_ITERATIONS = 3          # conjugate-gradient iterations of the colour least squares
Q_CUT = 12.0               # the renderer's footprint: exp(-q/2) with q <= Q_CUT


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
        self.at = _csr_counts(ok.sum(1), r[ok], tab[ok], (n, npix))
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
        self.a = _csr_counts(counts, g[inb], vals, (npix, n))


def _lattice_fit(filled: torch.Tensor, hole: torch.Tensor, s0: int, iterations: int):
    """Isotropic Gaussians on lattices around and inside the hole, colours by weighted
    least squares against `filled` (known pixels of the ring, the harmonic fill in the
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
        if lv > 0 or DILATE0:
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
    for cells, s in zip(cell_maps, spacings):
        # sigma on the file's grid (1/16 octave): the fit sees what the decoder renders
        ls = round(math.log2((LATTICE_SIGMA if s == s0 else LATTICE_SIGMA_DEEP) * s) * 16) / 16
        lvl = _Level(cells, s, ls, fit_pad, pad, sw_lv, pix // w, pix % w, h, w)
        if lvl.n:
            levels.append(lvl)
    sizes = [lv.n for lv in levels]
    n = sum(sizes)

    def normal(p):        # (A^T A) p
        parts = p.split(sizes)
        ap = sum(lv.a @ q for lv, q in zip(levels, parts))
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
    from .quantize import QuantConfig, to_integers
    h, w, c = image.shape
    hole = torch.from_numpy(np.ascontiguousarray(missing))
    img = torch.from_numpy(image.astype(np.float32) / 255.0)
    filled = harmonic_fill(img, (~hole).float())
    s0 = LATTICE_SPACING
    if gaussians is not None:
        # The count falls as 1/s0^2 (the finest lattice dominates): one rescale.
        area = float((_maxpool_sep(hole.float(), RING) > 0.5).sum())
        s0 = int(min(max(1, round(math.sqrt(area / max(1, gaussians)))), LATTICE_MAX_SPACING))
    s0 = min(s0, h, w)          # a cell's centre must lie in the image
    p = _lattice_fit(filled, hole, s0, LS_ITERATIONS if iterations is None else iterations)
    return to_integers(p, QuantConfig(), w, h, masked=True)


def inpaint(image, mask, *, keep_known: bool = True, **encode_options) -> np.ndarray:
    """Fill the pixels of `image` marked by `mask` (HxW, nonzero = missing).

    keep_known=True (default): a local masked fit. The hole is given the harmonic
    interpolant of the known pixels as a prior (the pixels under the mask are never read),
    Gaussians are laid on lattices over the hole and a ring of known pixels around it
    (fine next to the border, coarser deep inside), their colours are solved by least
    squares, and the hole is filled by rendering those Gaussians (the decoder's renderer,
    on the .gsi quantization grid); known pixels are kept. `gaussians` (optional) is an
    approximate budget for those local Gaussians.

    keep_known=False, or iterations > 0: a whole-image masked encode
    (gscodec.encode(image, mask=mask, **encode_options), defaults INPAINT_DENSITY Gaussians
    per 1000 pixels and INPAINT_ITERATIONS iterations) and its plain decode.

    Returns uint8 HxWxC (HxW for grayscale input)."""
    from .codec import _mask_array, decode, default_gaussians, encode, render_gaussians
    from .imageio import load_image
    arr = load_image(image)
    h, w, c = arr.shape
    missing = _mask_array(mask, h, w)
    if keep_known and not encode_options.get("iterations"):
        gaussians = encode_options.get("gaussians")
        if gaussians is not None:
            from .codec import _check_count
            gaussians = _check_count("gaussians", gaussians, 1)
        qg = inpaint_gaussians(arr, missing, gaussians=gaussians)
        rows = np.flatnonzero(missing.any(1))
        cols = np.flatnonzero(missing.any(0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = render_gaussians(qg, crop=(x0, y0, x1 - x0, y1 - y0)).reshape(y1 - y0, x1 - x0, c)
        out = arr.copy()
        sub = out[y0:y1, x0:x1]
        hm = missing[y0:y1, x0:x1]
        sub[hm] = crop[hm]
        return out[:, :, 0] if c == 1 else out
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
