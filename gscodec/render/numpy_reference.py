"""Pure-numpy fallback renderer, used to decode when the compiled kernel is missing.

It implements the contract of `gscodec.render` with the kernel's own arithmetic, so that it
agrees with the kernel, not merely approximately:
- the same per-Gaussian validity test, candidate rows (setup() in csrc/raster_cpu.cpp) and
  per-row column spans (row_span() in csrc/raster_kernels.h), in the same float64
  operations, so the same Gaussians are candidates for a pixel;
- q evaluated in float32 in the contract's order (numpy ufuncs never fuse), so every
  q <= Q_CUT decision is the kernel's;
- the kernel's fast_exp, written with the same float32 operations;
- per pixel, contributions summed in Gaussian index order starting from 0 (np.add.reduce
  over the leading axis accumulates row by row);
- waves (format version 5; the kernel has none yet, so this renderer is the one that
  decodes files with waves): the weight e = fast_exp(-q/2) of a Gaussian with amplitude
  amp != 0 becomes e * (1 + amp * cos_gsi((kx*dx + ky*dy) + phase)), float32 op by op
  (spec section 10.3); amp == 0 leaves e as it is.
The image is processed in TILE x TILE tiles, each over the Gaussians whose box meets it
(about 0.5 s for 2359 Gaussians at 768x512, 1.6 s for 10k, against 20-70 ms in the kernel).
"""
from __future__ import annotations

import math

import numpy as np

from .common import Q_CUT

TILE = 24
MAX_BLOCK_FLOATS = 4 * 1024 * 1024   # bound on the [n, th, tw, C] intermediate per step

_f = np.float32
_QC = _f(Q_CUT)


def fast_exp(x: np.ndarray) -> np.ndarray:
    """The kernel's exp approximation (relative error < 1e-6), float32 in and out."""
    x = np.clip(x, _f(-87.0), _f(87.0), dtype=np.float32)
    n = x * _f(1.44269504088896341)
    n += _f(12582912.0)                         # round to nearest integer
    n -= _f(12582912.0)
    r = n * _f(0.693145751953125)
    np.subtract(x, r, out=r)                    # x - n*ln2_hi
    x = n * _f(1.42860682030941723212e-6)       # x is free: reuse as scratch
    r -= x                                      # ... - n*ln2_lo
    p = np.full_like(r, _f(1.0) / _f(5040.0))
    for coef in (_f(1.0) / _f(720.0), _f(1.0) / _f(120.0), _f(1.0) / _f(24.0),
                 _f(1.0) / _f(6.0), _f(0.5), _f(1.0), _f(1.0)):
        p *= r
        p += coef
    s = n.astype(np.int32)
    s += 127
    s <<= 23
    p *= s.view(np.float32)
    return p


# cos_gsi (spec section 10.3, "Waves"): range reduction by pi in two parts, then the even
# Taylor polynomial of cos to degree 12 on [-pi/2, pi/2] (error about 1.8e-7 on [-80, 80]).
_COS_X_MAX = _f(4194304.0)                  # 2^22: keeps |x / pi| < 2^21, n a whole number
_INV_PI = _f(1.0 / math.pi)
_PI_HI = _f(3.140625)                       # 8 significant bits: n * PI_HI exact, |n| < 2^16
_PI_LO = _f(math.pi - 3.140625)
_COS_C = tuple(_f((-1) ** j / math.factorial(2 * j)) for j in range(7))   # C0 .. C6


def cos_gsi(x: np.ndarray) -> np.ndarray:
    """The renderers' cosine (spec section 10.3), float32 in and out, every operation
    rounded: the same bits in every backend for every finite x."""
    x = np.clip(x, -_COS_X_MAX, _COS_X_MAX, dtype=np.float32)
    n = x * _INV_PI
    n += _f(12582912.0)                         # round to a whole number
    n -= _f(12582912.0)
    r = n * _PI_HI
    np.subtract(x, r, out=r)
    r -= n * _PI_LO
    r2 = r * r
    p = np.full_like(r, _COS_C[6])
    for coef in _COS_C[5::-1]:
        p *= r2
        p += coef
    with np.errstate(invalid="ignore"):         # NaN stays NaN
        odd = (n.astype(np.int32) & 1).astype(bool)
    np.negative(p, out=p, where=odd)
    return p


def wave_factor(means: np.ndarray, waves: np.ndarray, x0: int, y0: int, tw: int, th: int
                ) -> np.ndarray:
    """1 + amp * cos_gsi((kx*dx + ky*dy) + phase) of each Gaussian at each pixel centre of
    a tile, [n, th, tw] float32, dx and dy as in q_tile."""
    px = (np.arange(x0, x0 + tw, dtype=np.float32) + _f(0.5))[None, None, :]
    py = (np.arange(y0, y0 + th, dtype=np.float32) + _f(0.5))[None, :, None]
    dx = px - means[:, 0, None, None]
    dy = py - means[:, 1, None, None]
    kx, ky, phase, amp = (waves[:, j, None, None] for j in range(4))
    arg = kx * dx + ky * dy
    arg += phase
    t = amp * cos_gsi(arg)
    t += _f(1.0)
    return t


def gaussian_setup(means: np.ndarray, conics: np.ndarray, height: int, width: int):
    """Per Gaussian, as the kernel's setup() computes it (float32 validity, float64 box):
    the valid mask (drawable and its box meets the image), float64 det = a*c - b*b, the
    unclamped candidate rows [ylo, yhi] and the clamped column box (j0, j1) of the whole
    ellipse (inclusive, widened by one more pixel than the kernel's: it only selects the
    tiles, which must hold every row span)."""
    mx, my = means[:, 0], means[:, 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    with np.errstate(all="ignore"):
        finite = np.isfinite(means).all(axis=1) & np.isfinite(conics).all(axis=1)
        valid = finite & (a > 0) & ((a * c - b * b) > 0)
        a64, b64, c64 = a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
        det = a64 * c64 - b64 * b64
        pos = det > 0
        det_safe = np.where(pos, det, 1.0)
        ry = np.where(pos, np.sqrt(Q_CUT * a64 / det_safe), np.inf)
        rx = np.where(pos, np.sqrt(Q_CUT * c64 / det_safe), np.inf)
        mx64, my64 = mx.astype(np.float64), my.astype(np.float64)
        ylo = np.floor(my64 - ry - 0.5) - 1.0
        yhi = np.ceil(my64 + ry - 0.5) + 1.0
        xlo = np.floor(mx64 - rx - 0.5) - 1.0
        xhi = np.ceil(mx64 + rx - 0.5) + 1.0
        valid &= (yhi >= 0) & (ylo <= height - 1) & (xhi >= 0) & (xlo <= width - 1)
        i0, i1, j0, j1 = [np.where(valid, np.clip(v, 0, hi), 0).astype(np.int64)
                          for v, hi in ((ylo, height - 1), (yhi, height - 1),
                                        (xlo - 1.0, width - 1), (xhi + 1.0, width - 1))]
    return valid, det, (ylo, yhi), (i0, i1, j0, j1)


def row_spans(means, conics, det, y0: int, th: int):
    """The kernel's row_span(): per Gaussian and row y0..y0+th-1 the widened column span
    [lo, hi] (float64, unclamped) of the ellipse q <= Q_CUT on that row; [n, th] each."""
    a = conics[:, 0, None].astype(np.float64)
    b = conics[:, 1, None].astype(np.float64)
    dy32 = (np.arange(y0, y0 + th, dtype=np.float32) + _f(0.5))[None, :] - means[:, 1, None]
    dy = dy32.astype(np.float64)
    with np.errstate(all="ignore"):
        disc = a * Q_CUT - (det[:, None] * dy) * dy
        disc = np.where(disc > 0.0, disc, 0.0)
        half = np.sqrt(disc) / a
        xc = means[:, 0, None].astype(np.float64) - (b * dy) / a
        lo = np.floor((xc - half) - 0.5) - 1.0
        hi = np.ceil((xc + half) - 0.5) + 1.0
    return lo, hi


def q_tile(means, conics, x0: int, y0: int, tw: int, th: int) -> np.ndarray:
    """q of each Gaussian at each pixel centre of a tile, [n, th, tw] float32, in the
    contract's evaluation order."""
    px = (np.arange(x0, x0 + tw, dtype=np.float32) + _f(0.5))[None, None, :]
    py = (np.arange(y0, y0 + th, dtype=np.float32) + _f(0.5))[None, :, None]
    mx, my = means[:, 0, None, None], means[:, 1, None, None]
    a, b, c = conics[:, 0, None, None], conics[:, 1, None, None], conics[:, 2, None, None]
    dx = px - mx
    dy = py - my
    return (a * dx + (_f(2.0) * b) * dy) * dx + (c * dy) * dy


def _tile_weights(means, conics, det, ylo, yhi, x0, y0, tw, th, waves=None):
    """Weights [n, th, tw] of one tile: fast_exp(-q/2), times the wave's 1 + amp * cos
    for Gaussians with a wave (amp != 0; waves [n, 4] or None), where q <= Q_CUT on a
    candidate pixel (row in [ylo, yhi], column in the row's span), else 0."""
    q = q_tile(means, conics, x0, y0, tw, th)
    w = fast_exp(_f(-0.5) * q)
    wv = np.flatnonzero(waves[:, 3] != 0) if waves is not None else ()
    if len(wv):                                 # amp == 0: no cosine, w stays e
        w[wv] *= wave_factor(means[wv], waves[wv], x0, y0, tw, th)
    lo, hi = row_spans(means, conics, det, y0, th)
    rows = np.arange(y0, y0 + th, dtype=np.float64)[None, :]
    row_ok = (rows >= ylo[:, None]) & (rows <= yhi[:, None])
    cols = np.arange(x0, x0 + tw, dtype=np.float64)[None, None, :]
    cand = row_ok[:, :, None] & (cols >= lo[:, :, None]) & (cols <= hi[:, :, None])
    w[~(cand & (q <= _QC))] = _f(0.0)
    return w


def render_numpy_ref(means, conics, colors, height: int, width: int, waves=None
                     ) -> np.ndarray:
    """Render float32 [height, width, C] by the contract (see the module docstring).
    Inputs are converted to float32 arrays [N, 2], [N, 3], [N, C] and waves [N, 4]
    (kx, ky, phase, amp; None: no waves)."""
    means = np.ascontiguousarray(means, dtype=np.float32)
    conics = np.ascontiguousarray(conics, dtype=np.float32)
    colors = np.ascontiguousarray(colors, dtype=np.float32)
    height, width = int(height), int(width)
    n_all, C = colors.shape
    out = np.zeros((height, width, C), dtype=np.float32)
    if n_all == 0 or height == 0 or width == 0:
        return out
    valid, det, (ylo, yhi), (i0, i1, j0, j1) = gaussian_setup(means, conics, height, width)
    if waves is not None:
        waves = np.ascontiguousarray(waves, dtype=np.float32).reshape(n_all, 4)
        waving = waves[:, 3] != 0                  # a non-finite wave: nothing drawn
        valid &= ~waving | np.isfinite(waves).all(axis=1)
    for y0 in range(0, height, TILE):
        th = min(TILE, height - y0)
        rows = np.flatnonzero(valid & (i1 >= y0) & (i0 <= y0 + th - 1))
        if rows.size == 0:
            continue
        rj0, rj1 = j0[rows], j1[rows]
        for x0 in range(0, width, TILE):
            tw = min(TILE, width - x0)
            idx = rows[(rj1 >= x0) & (rj0 <= x0 + tw - 1)]   # ascending: index order
            if idx.size == 0:
                continue
            acc = np.zeros((th, tw, C), dtype=np.float32)
            block = max(1, MAX_BLOCK_FLOATS // (th * tw * C))
            for s in range(0, idx.size, block):
                bi = idx[s:s + block]
                w = _tile_weights(means[bi], conics[bi], det[bi], ylo[bi], yhi[bi],
                                  x0, y0, tw, th, None if waves is None else waves[bi])
                terms = w[..., None] * colors[bi][:, None, None, :]   # [n, th, tw, C]
                # One running sum per pixel, in index order, as in the kernel.
                acc = np.add.reduce(np.concatenate([acc[None], terms]), axis=0)
            out[y0:y0 + th, x0:x0 + tw] = acc
    return out


# ---- the backend surface (gscodec.render.backends): "numpy_reference" -----------------------

def available() -> bool:
    return True


def unavailable_reason() -> str | None:
    return None


def render_window(means, conics, colors, x0: int, y0: int, width: int, height: int,
                  waves=None):
    """The decoder's uint8 pixels of a window (spec section 10), strip by strip; waves
    [N, 4] of the scaled view or None (a strip's origin does not change them)."""
    from .view import to_uint8_numpy, window_by_strips
    m = np.ascontiguousarray(means, dtype=np.float32)
    q = np.ascontiguousarray(conics, dtype=np.float32)
    c = np.ascontiguousarray(colors, dtype=np.float32)
    return window_by_strips(
        lambda ms, rows: to_uint8_numpy(render_numpy_ref(ms, q, c, rows, width, waves)),
        m, x0, y0, width, height, c.shape[1])
