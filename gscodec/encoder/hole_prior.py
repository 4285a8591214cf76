"""The hole prior: a fill of the unknown pixels of an image from the known ones, used by the
masked encoder (so that an ordinary decode of a masked .gsi fills the hole) and by inpainting
(gscodec/inpainting/ imports it from here: the encoder may not import upward).

- `harmonic_fill` solves the discrete Laplace equation with the known pixels as boundary
  (the MMSE linear estimate under a 1/f^2 image spectrum; unlike the biharmonic fill it
  cannot overshoot). A biharmonic and a thin-plate-under-tension prior, and blends of the
  two chosen by cross-validation on a ring of known pixels, measured worse on average on
  Kodak (docs/experiments.md, Inpainting, "Higher-order priors").
- `anisotropic_fill` (the prior in use) starts from it and diffuses along the edges of the
  known pixels instead of across them, so an edge that meets a stroke is carried through it
  (docs/experiments.md, Inpainting, "Edge-directed hole prior"); in a large hole it keeps
  colour regions apart instead of averaging them to a grey (label sharpening, below;
  "Large holes: the prior everywhere, colour regions").

The harmonic fill is solved by conjugate gradients on the hole pixels only, started from the
solution one pyramid level coarser (a coarse pixel is known if any of its four is), so the
work grows with the hole's area, not the image's; the anisotropic one on the pixels within
ANISO_BAND of the border. The pixels under the mask are never read.

Label sharpening: the known pixels next to the hole are split into LABELS colour clusters
(k-means); the same linear fill carries each cluster's indicator p_k and its colours
(p_k c_k) into the hole. The fill is sum_k p_k c_k (exactly the plain fill: the operator is
linear); with weights p_k^LABEL_GAMMA / sum_j p_j^LABEL_GAMMA each pixel takes mostly the
colour field of the region that reaches it, so a hole across sky and wall gets sky above a
boundary and wall below it instead of one grey average.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .init import blur, luminance

FILL_ITERATIONS = 10     # conjugate-gradient iterations per pyramid level (fine levels)
FILL_COARSE = 4096       # below this many unknowns a level is solved without a coarser one
# Anisotropic fill (docs/experiments.md, Inpainting, "Edge-directed hole prior"):
ANISO_KAPPA = 20.0       # damping of diffusion across an edge: weight exp(-KAPPA a cos^2)
ANISO_SCALES = (5.0, 9.0, 14.0, 24.0, 40.0)   # structure-tensor scales (pixels) by local hole
ANISO_WIDTHS = (4.0, 9.0, 18.0, 32.0)         #   half-width: up to 4 px the first, and so on
ANISO_INNER = 1.0        # pre-smoothing (pixels) of the luma before its gradients
ANISO_EPS = 1e-4         # gradient energy (luma^2) at which an orientation counts half
ANISO_BAND = 200         # deeper hole pixels keep the harmonic fill (24 lost on large holes)
ANISO_ITERATIONS = 150   # conjugate-gradient iterations from the harmonic start (50: unconverged)
LABELS = 4               # colour clusters of the known pixels next to the hole (8: no better)
LABEL_GAMMA = 2.0        # region weights p_k^gamma: 1 = the plain fill; 3 lost hole PSNR
LABEL_RING = 3           # known pixels within this many of the hole give the clusters
LABEL_NEAR = 4           # no sharpening this close to the border (thin strokes lost with it)
LABEL_MIN_DEEP = 0.05    # nor when less of the hole is 2 LABEL_NEAR deep (thin strokes: no gain)
LABEL_SAMPLES = 20000    # at most this many of them (evenly spaced) for the k-means
LABEL_KMEANS_ITERATIONS = 15


def csr_counts(counts: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, shape):
    """CSR matrix from the entries of each row in turn (counts: entries per row)."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, vals.float(), size=shape)


def harmonic_fill(img: torch.Tensor, known: torch.Tensor, iters: int | None = None
                  ) -> torch.Tensor:
    """Fill the unknown pixels of img [H,W,C] (known [H,W], 1 = known) with the harmonic
    interpolant of the known ones: the solution of the discrete Laplace equation (5-point
    stencil, mirror border) with the known pixels as Dirichlet boundary. Unknown input
    values are never read."""
    hole = known < 0.5
    x = img * (~hole)[:, :, None]
    return _fill_level(x, hole, FILL_ITERATIONS if iters is None else iters)


def anisotropic_fill(img: torch.Tensor, known: torch.Tensor, iters: int | None = None,
                     sharpen: bool = True) -> torch.Tensor:
    """Edge-directed fill of the unknown pixels of img [H,W,C] (known [H,W], 1 = known):
    the harmonic fill, then, on the hole pixels within ANISO_BAND of a known one, the
    minimiser of sum over 8-neighbour pairs of w_pq (u_p - u_q)^2 with the known pixels
    (and the deeper hole) fixed. w_pq is small where the pair crosses an edge: the edge
    orientation comes from the structure tensor of the known pixels (normalised
    convolution at a scale that follows the hole's local half-width), so an edge that
    meets a stroke is carried across it instead of being blurred. sharpen: label
    sharpening (module docstring) on top. Unknown input values are never read."""
    hole = known < 0.5
    c = img.shape[2]
    known_vals = vals = img * (~hole)[:, :, None]
    k = 0
    dist = _distance(hole, ANISO_BAND + 4)
    deep = dist.clamp(max=2 * LABEL_NEAR + 1)        # = _distance(hole, 2 * LABEL_NEAR)
    # Thin strokes (almost no pixel 8 px from the border) skip the region channels: the
    # sharpening would touch 1 % of their pixels for 16 channels of solve.
    if sharpen and float((deep > 2 * LABEL_NEAR).sum()) >= LABEL_MIN_DEEP * float(hole.sum()):
        onehot = _labels(vals, hole)
        if onehot is not None:
            k = onehot.shape[2]
            vals = torch.cat([(onehot[:, :, j:j + 1] * vals) for j in range(k)] + [onehot], 2)
    out = _directed_fill(img, known, vals, dist, iters)
    if k == 0:
        return out
    p = out[:, :, k * c:].clamp(min=1e-6)                       # [H,W,K] region shares
    # plain next to the border (a stroke over a smooth gradient keeps its ramp), sharpened
    # from LABEL_NEAR pixels in to 2 LABEL_NEAR on
    depth = (deep - LABEL_NEAR).clamp(0, LABEL_NEAR) / LABEL_NEAR
    wgt = p ** (1.0 + (LABEL_GAMMA - 1.0) * depth[:, :, None])
    wgt = wgt / wgt.sum(2, keepdim=True)
    fill = sum(out[:, :, j * c:(j + 1) * c] * (wgt[:, :, j:j + 1] / p[:, :, j:j + 1])
               for j in range(k))                               # sum_k w_k c_k
    return torch.where(hole[:, :, None], fill, known_vals)


def _labels(vals: torch.Tensor, hole: torch.Tensor):
    """One-hot [H,W,LABELS] colour-cluster labels of the known pixels (zeros in the hole),
    k-means on the known pixels within LABEL_RING of the hole, started at luma quantiles
    (deterministic). None when there are too few of them to cluster."""
    h, w, c = vals.shape
    ring = _dilate(hole, LABEL_RING) & ~hole
    pts = vals[ring]
    if pts.shape[0] < 4 * LABELS:
        return None
    if pts.shape[0] > LABEL_SAMPLES:
        pts = pts[torch.linspace(0, pts.shape[0] - 1, LABEL_SAMPLES).long()]
    order = torch.argsort(pts.mean(1), stable=True)
    cent = pts[order[((torch.arange(LABELS) + 0.5) / LABELS * pts.shape[0]).long()]].clone()
    for _ in range(LABEL_KMEANS_ITERATIONS):
        lab = torch.cdist(pts, cent).argmin(1)
        cnt = torch.bincount(lab, minlength=LABELS).float()
        sums = torch.zeros_like(cent).index_add_(0, lab, pts)
        cent = torch.where(cnt[:, None] > 0, sums / cnt.clamp(min=1)[:, None], cent)
    lab = torch.cdist(vals.reshape(-1, c), cent).argmin(1).view(h, w)
    return F.one_hot(lab, LABELS).float() * (~hole)[:, :, None]


def _directed_fill(img: torch.Tensor, known: torch.Tensor, vals: torch.Tensor,
                   dist: torch.Tensor, iters: int | None) -> torch.Tensor:
    """The edge-directed fill (structure from img's known pixels) of every channel of vals
    [H,W,K] (zeros in the hole); dist: `_distance(hole, ANISO_BAND + 4)`."""
    hole = known < 0.5
    base = _fill_level(vals, hole, FILL_ITERATIONS)
    band = hole & (dist <= ANISO_BAND)
    idx = torch.nonzero(band.flatten()).flatten()
    if idx.numel() == 0:
        return base
    # Local half-width: the largest distance nearby picks the scale.
    halfw = _dilate(dist, 3)
    nx, ny, a = _structure(img, known, halfw)
    h, w, c = vals.shape
    n = idx.numel()
    pos = _positions(h, w, idx)
    wp = w + 2
    ip = (idx // w + 1) * wp + (idx % w + 1)
    xpad = F.pad(base, (0, 0, 1, 1, 1, 1)).reshape(-1, c)
    nxp, nyp, ap = (F.pad(t, (1, 1, 1, 1)).flatten() for t in (nx, ny, a))
    cols, mvals, b, deg = [], [], 0, 0
    for dy in (-1, 0, 1):                       # column order within a row
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                cols.append(torch.arange(n))
                mvals.append(None)
                continue
            q = ip + dy * wp + dx
            length = math.hypot(dx, dy)
            ex, ey = dx / length, dy / length
            across = 0.5 * ((nxp[ip] * ex + nyp[ip] * ey) ** 2 * ap[ip]
                            + (nxp[q] * ex + nyp[q] * ey) ** 2 * ap[q])
            # 1 and 1/2: the 8-neighbour stencil of the isotropic Laplacian
            wgt = (1.0 / length ** 2) * torch.exp(-ANISO_KAPPA * across)
            nb = pos[q]
            wgt = wgt * (nb <= n)
            deg = deg + wgt
            b = b + (wgt * (nb == n))[:, None] * xpad[q]
            cols.append(nb)
            mvals.append(-wgt)
    mvals[4] = deg
    cols, mvals = torch.stack(cols, 1), torch.stack(mvals, 1)
    keep = cols < n
    mat = csr_counts(keep.sum(1), cols[keep], mvals[keep], (n, n))
    u = base.reshape(-1, c)[idx].clone()
    steps = ANISO_ITERATIONS if iters is None else iters
    u = _pcg(lambda p: mat @ p, b, deg[:, None], u, steps)
    out = base.reshape(-1, c).clone()
    out[idx] = u
    return out.view(h, w, c)


def _distance(hole: torch.Tensor, cap: int) -> torch.Tensor:
    """Chessboard distance (pixels) of each hole pixel to the nearest known one, at most cap
    (then cap + 1)."""
    dist = torch.zeros(hole.shape)
    cur = hole.clone()
    for _ in range(cap + 1):
        if not bool(cur.any()):
            break
        dist += cur
        cur = ~_dilate(~cur, 1)
    return dist


def _dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Max over the (2r+1)^2 square of [H,W] (bool or float), by shifted slices (faster
    than max_pool2d on the CPU)."""
    for dim in (0, 1):
        y = x.clone()
        n = x.shape[dim]
        for k in range(1, r + 1):
            if k >= n:
                break
            lo, hi = x.narrow(dim, 0, n - k), x.narrow(dim, k, n - k)
            a, b = y.narrow(dim, k, n - k), y.narrow(dim, 0, n - k)
            torch.maximum(a, lo, out=a)
            torch.maximum(b, hi, out=b)
        x = y
    return x


def blur_big(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [H,W] for large sigma: on a downsampled grid, then upsampled."""
    h, w = x.shape
    f = 1
    while sigma / f > 4 and min(h, w) // (2 * f) >= 8:
        f *= 2
    y = F.avg_pool2d(x[None, None], f, ceil_mode=True)[0, 0] if f > 1 else x
    y = blur(y, sigma / f)
    if f > 1:
        y = F.interpolate(y[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return y


def _structure(img: torch.Tensor, known: torch.Tensor, halfw: torch.Tensor):
    """Gradient direction (cos, sin) and anisotropy a in [0, 1] at each pixel, from the known
    pixels of img [H,W,C] (zeros in the hole): forward differences of the smoothed luma
    between known pairs, their outer
    products averaged by normalised convolution at the scale that ANISO_SCALES gives for
    the local half-width halfw. a = coherence^2 x l1 / (l1 + ANISO_EPS), zero where the
    average saw too few known pairs."""
    # Gradients of the luma pre-smoothed at ANISO_INNER (normalised over the known pixels):
    # on a raw step at 45 degrees gx and gy fall on different pixels, their product
    # averages to zero and the tensor looks isotropic.
    lum = blur(luminance(img) * known, ANISO_INNER) / blur(known, ANISO_INNER).clamp(min=1e-6)
    valid = torch.zeros_like(lum)
    valid[:-1, :-1] = known[:-1, :-1] * known[:-1, 1:] * known[1:, :-1]
    gx = torch.zeros_like(lum)
    gy = torch.zeros_like(lum)
    gx[:, :-1] = lum[:, 1:] - lum[:, :-1]
    gy[:-1] = lum[1:] - lum[:-1]
    gx, gy = gx * valid, gy * valid
    # the scale of each pixel: 0, 1, ... by the half-width thresholds
    level = sum((halfw > t).long() for t in ANISO_WIDTHS)
    jxx, jxy, jyy, nrm = (torch.zeros_like(lum) for _ in range(4))
    for k, sigma in enumerate(ANISO_SCALES):
        sel = level == k
        if not bool(sel.any()):
            continue
        for acc, t in zip((jxx, jxy, jyy, nrm), (gx * gx, gx * gy, gy * gy, valid), strict=True):
            torch.where(sel, blur_big(t, sigma), acc, out=acc)
    jxx, jxy, jyy = (t / nrm.clamp(min=1e-6) for t in (jxx, jxy, jyy))
    half = 0.5 * (jxx + jyy)
    disc = torch.sqrt((0.25 * (jxx - jyy) ** 2 + jxy ** 2).clamp(min=0))
    l1, l2 = half + disc, (half - disc).clamp(min=0)
    angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    coherence = ((l1 - l2) / (l1 + l2 + 1e-12)) ** 2
    a = coherence * l1 / (l1 + ANISO_EPS) * (nrm > 0.05)
    return torch.cos(angle), torch.sin(angle), a


def _half(x: torch.Tensor) -> torch.Tensor:
    """[H,W,C] -> [ceil(H/2), ceil(W/2), C], 2x2 sums (odd sides padded with zeros)."""
    h, w, c = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    y = x.view(x.shape[0] // 2, 2, x.shape[1] // 2, 2, c)
    # four slices added: a strided .sum((1, 3)) is far slower on many channels; this order
    # gave the same floats on the images measured
    return (y[:, 0, :, 0] + y[:, 0, :, 1]) + (y[:, 1, :, 0] + y[:, 1, :, 1])


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
    out[idx] = _pcg(*_harmonic_system(x, hole, idx), start, steps)
    return out.view(h, w, c)


def _positions(h, w, idx):
    """Padded [H+2, W+2] map (flattened) of each pixel's row in the unknown vector of the
    hole pixels idx: n for a known pixel, n + 1 outside the image."""
    n = idx.numel()
    wp = w + 2
    pos = torch.full((h + 2, wp), n + 1, dtype=torch.long)
    inner = torch.full((h * w,), n, dtype=torch.long)
    inner[idx] = torch.arange(n)
    pos[1:-1, 1:-1] = inner.view(h, w)
    return pos.flatten()


def _harmonic_system(x, hole, idx):
    """L u = b on the hole pixels idx (x [H,W,C]: known values, zeros in the hole):
    L = degree - adjacency among hole pixels, b = sum of the known 4-neighbours; the image
    border is a mirror. Returns (matvec, b, diagonal)."""
    h, w, c = x.shape
    n = idx.numel()
    pos = _positions(h, w, idx)
    wp = w + 2
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
    lap = csr_counts(keep.sum(1), cols[keep], vals[keep], (n, n))
    return (lambda p: lap @ p), b, deg[:, None]


def _pcg(matvec, b, diag, u, steps, tol=1e-5):
    """Jacobi-preconditioned conjugate gradients for A u = b, every column at once."""
    n = u.shape[0]
    dinv = 1.0 / diag.clamp(min=1e-12)
    ones = torch.ones(n)
    r = b - matvec(u)
    z = r * dinv
    p = z.clone()
    rz = ones @ (r * z)                     # column sums (a matrix product: fast)
    thresh = (tol * tol) * n
    for _ in range(steps):
        if float(rz.max()) <= thresh:
            break
        ap = matvec(p)
        alpha = rz / (ones @ (p * ap)).clamp(min=1e-30)
        u.addcmul_(p, alpha)
        r.addcmul_(ap, alpha, value=-1.0)
        torch.mul(r, dinv, out=z)
        rz_new = ones @ (r * z)
        p.mul_(rz_new / rz.clamp(min=1e-30)).add_(z)
        rz = rz_new
    return u
