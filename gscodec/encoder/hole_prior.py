"""The hole prior: a smooth fill of the unknown pixels of an image from the known ones, used
by the masked encoder (so that an ordinary decode of a masked .gsi fills the hole) and by
inpainting (gscodec/inpainting/ imports it from here: the encoder may not import upward).

`harmonic_fill` solves the discrete Laplace equation with the known pixels as boundary (the
MMSE linear estimate under a 1/f^2 image spectrum; unlike the biharmonic fill it cannot
overshoot). A biharmonic and a thin-plate-under-tension prior, and blends of the two chosen
by cross-validation on a ring of known pixels, measured worse on average on Kodak
(docs/experiments.md, Inpainting, "Higher-order priors").

Solved by conjugate gradients on the hole pixels only, started from the solution one pyramid
level coarser (a coarse pixel is known if any of its four is), so the work grows with the
hole's area, not the image's. The pixels under the mask are never read.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

FILL_ITERATIONS = 10     # conjugate-gradient iterations per pyramid level (fine levels)
FILL_COARSE = 4096       # below this many unknowns a level is solved without a coarser one


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
