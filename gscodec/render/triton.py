"""Triton backend ("cuda"): tile-binned accumulated summation of 2D Gaussians on the GPU.

Implements the contract in `gscodec.render` (q in the spec's float32 order without FMA,
Q_CUT = 12, validity rules). Under `TRITON_INTERPRET=1` the same kernels run on CPU tensors
(Triton's interpreter); that is how the tests exercise them on machines without a GPU.

Pipeline of one render call (per horizontal strip of `strip_rows` rows, default 512):

1. Binning on the device (`bin_gaussians`, plain torch ops): per Gaussian the exact bounds of
   its q <= Q_CUT ellipse (half-extents sqrt(Q_CUT*c/det) in x, sqrt(Q_CUT*a/det) in y, in
   float64, mapped to pixel centres j + 0.5 and widened by one pixel exactly as
   csrc/raster_cpu.cpp does), clamped to the strip and turned into a rectangle of 16x16
   tiles. Invalid (non-PD or non-finite) and off-strip Gaussians get an empty rectangle.
2. (tile, gaussian) pairs: counts -> cumsum offsets -> fill -> stable sort by tile id ->
   per-tile [start, end) ranges by searchsorted. The pair buffer has a FIXED capacity that
   depends only on shapes (N and the strip's tile count), never on data:
       capacity = pair_capacity or PAIRS_PER_GAUSSIAN*N + PAIRS_PER_TILE*tiles.
   A Gaussian goes into the pair list iff it covers at most `max_tiles` tiles (default 64)
   and its pairs fit below the capacity (cumsum end <= capacity). Every other drawn
   Gaussian (huge ones, or the ones past an overflow) goes into a "big list", compacted on
   the device (cumsum + scatter) and scanned by every tile program, which tests its tile
   rectangle before evaluating pixels. So the result is exact for any input (including one
   Gaussian covering every tile, or a capacity far too small), memory is O(N + tiles) per
   strip whatever the data, and an undersized capacity only costs speed. `Binning.overflow`
   is a device flag (total pairs > capacity) for callers who want to check it lazily.
3. Forward kernel: one program per tile; it walks its pair range and then the big list in
   batches of BATCH Gaussians ([BATCH, 256] blocks; any number of batches, so tiles with
   more than 256 Gaussians are complete), accumulating colour_k * exp(-q/2) for C = 1..4
   channels in registers, in a fixed order (forward is deterministic).
4. Backward (closed form, same as the CPU kernel): with v = w * sum_c(g_c * colour_c),
   dmean = sum(v * (a dx + b dy), v * (b dx + c dy)), da = -sum(v dx^2)/2,
   db = -sum(v dx dy), dc = -sum(v dy^2)/2, dcolour_c = sum(w g_c).
   - default: the tile program reduces each (tile, Gaussian) pair over the tile's pixels and
     adds it with tl.atomic_add (order of float additions varies between runs on a GPU);
     big-list Gaussians use the per-Gaussian kernel below (no atomics).
   - deterministic=True: one program per Gaussian walks the tiles of its rectangle in a fixed
     order and owns its gradient (no atomics, no partial buffers); strips are accumulated
     sequentially. Bit-identical across runs.

Exact mode (render_cuda(..., exact=True), forward only, for decoding): bit-identical float32
output to the CPU kernel (csrc/raster_kernels.h), hence identical 8-bit pixels. Binning puts
every drawn Gaussian into the pair list (no big list, no capacity: the exact pair count is
read with one .item() per strip), so each tile's pairs are in increasing Gaussian index; the
kernel (_fwd_exact_kernel) visits them one at a time (scalar loads, [256]-pixel vectors) and
accumulates acc += w * colour per pixel from 0.0, w = fast_exp(-q/2) if q <= Q_CUT else 0,
with fast_exp the CPU kernel's polynomial op by op (_fast_exp). Everything below about host
synchronisation applies to the normal mode only.

No host synchronisation: no .item()/.cpu(), no data-dependent shapes or Python branches on
tensor values; loop bounds that depend on data (pair ranges, big-list length) are read from
device memory inside the kernels. Hence the whole call can be captured in a CUDA graph as
is (shapes depend only on N, C, H, W and the capacity); pass `pair_capacity` to size the
pair buffer for the captured workload and read `bin_gaussians(...).overflow` after replay
to know whether the fast path was taken for every Gaussian (correctness does not depend on it).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch

from .common import Q_CUT, refuse_waves

TILE = 16
STRIP_ROWS = 512                 # rows per strip (multiple of TILE): bounds the pair buffer
BATCH = 16                       # Gaussians per inner batch of the tile kernels (GPU):
#                                  [16, 256] fp32 blocks = 32 registers/thread at 4 warps
BATCH_INTERPRET = 32             # under the interpreter: fewer, larger numpy steps
MAX_TILES_PER_GAUSSIAN = 64      # more tiles than this: big list instead of pairs
PAIRS_PER_GAUSSIAN = 16          # default pair capacity = 16*N + 16*tiles
PAIRS_PER_TILE = 16
NUM_WARPS = 4

__all__ = [
    "Binning",
    "available",
    "bin_gaussians",
    "fast_exp",
    "interpreter_active",
    "render_cuda",
    "unavailable_reason",
]

_import_error: str | None = None
_triton = None
_kernel_cache: dict[bool, dict] = {}
tl = None  # triton.language, bound on first use (the kernels refer to it as a global)
_fast_exp_tl = None  # the jitted _fast_exp of the current mode (see _kernels)


def _import_triton():
    global _triton, _import_error
    if _triton is None and _import_error is None:
        try:
            import triton
            import triton.language
            _triton = triton
        except Exception as exc:  # noqa: BLE001
            _import_error = f"triton does not import: {type(exc).__name__}: {exc}"
    return _triton


def interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1: kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def unavailable_reason() -> str | None:
    if _import_triton() is None:
        return _import_error
    if not torch.cuda.is_available() and not interpreter_active():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def available() -> bool:
    return unavailable_reason() is None


# ---------------------------------------------------------------------------------------------
# Kernels. Plain functions here, decorated with triton.jit lazily on first use (see _kernels):
# whether Triton interprets a kernel is decided when it is decorated, so deferring the
# decoration lets TRITON_INTERPRET be set any time before the first render, even after
# triton was imported. The one @triton.jit helper, _fast_exp, is called through the global
# _fast_exp_tl, which _kernels binds to the helper decorated for the mode being launched.
# ---------------------------------------------------------------------------------------------

def _fwd_kernel(means, conics, colors, out, pair_gid, tile_start, big_ids, n_big, rect,
                W, row0, strip_h, tiles_x,
                C: tl.constexpr, TILE_: tl.constexpr, BG: tl.constexpr):
    t = tl.program_id(0)
    ty = t // tiles_x
    tx = t - ty * tiles_x
    p = tl.arange(0, TILE_ * TILE_)
    lx = tx * TILE_ + p % TILE_
    ly = ty * TILE_ + p // TILE_
    pmask = (lx < W) & (ly < strip_h)
    pxf = lx.to(tl.float32) + 0.5
    pyf = (ly + row0).to(tl.float32) + 0.5
    acc0 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc1 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc2 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc3 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    start = tl.load(tile_start + t)
    npairs = tl.load(tile_start + t + 1) - start
    nb = tl.load(n_big)
    total = npairs + nb
    offs = tl.arange(0, BG)
    # One index space: [0, npairs) are this tile's pairs, [npairs, total) the big list.
    for s in range(0, total, BG):
        idx = s + offs
        live = idx < total
        from_pairs = idx < npairs
        pid_ = tl.load(pair_gid + start + idx, mask=from_pairs, other=0)
        bid_ = tl.load(big_ids + (idx - npairs), mask=live & (idx >= npairs), other=0)
        gid = tl.where(from_pairs, pid_, bid_)
        rx0 = tl.load(rect + 4 * gid, mask=live, other=1)
        rx1 = tl.load(rect + 4 * gid + 1, mask=live, other=0)
        ry0 = tl.load(rect + 4 * gid + 2, mask=live, other=1)
        ry1 = tl.load(rect + 4 * gid + 3, mask=live, other=0)
        hit = live & (rx0 <= tx) & (tx <= rx1) & (ry0 <= ty) & (ty <= ry1)
        if tl.max(hit.to(tl.int32), axis=0) > 0:
            mx = tl.load(means + 2 * gid, mask=hit, other=0.0)
            my = tl.load(means + 2 * gid + 1, mask=hit, other=0.0)
            a = tl.load(conics + 3 * gid, mask=hit, other=0.0)
            b = tl.load(conics + 3 * gid + 1, mask=hit, other=0.0)
            c = tl.load(conics + 3 * gid + 2, mask=hit, other=0.0)
            dx = pxf[None, :] - mx[:, None]
            dy = pyf[None, :] - my[:, None]
            # The contract's float32 order; launched with enable_fp_fusion=False (no FMA).
            q = (a[:, None] * dx + (2.0 * b)[:, None] * dy) * dx + (c[:, None] * dy) * dy
            keep = (q <= 12.0) & hit[:, None]
            w = tl.where(keep, tl.exp(-0.5 * q), 0.0)
            col = tl.load(colors + C * gid, mask=hit, other=0.0)
            acc0 += tl.sum(w * col[:, None], axis=0)
            if C > 1:
                col = tl.load(colors + C * gid + 1, mask=hit, other=0.0)
                acc1 += tl.sum(w * col[:, None], axis=0)
            if C > 2:
                col = tl.load(colors + C * gid + 2, mask=hit, other=0.0)
                acc2 += tl.sum(w * col[:, None], axis=0)
            if C > 3:
                col = tl.load(colors + C * gid + 3, mask=hit, other=0.0)
                acc3 += tl.sum(w * col[:, None], axis=0)
    o = ((ly + row0).to(tl.int64) * W + lx) * C
    tl.store(out + o, acc0, mask=pmask)
    if C > 1:
        tl.store(out + o + 1, acc1, mask=pmask)
    if C > 2:
        tl.store(out + o + 2, acc2, mask=pmask)
    if C > 3:
        tl.store(out + o + 3, acc3, mask=pmask)


def _fast_exp(x):
    """csrc/raster_kernels.h's fast_exp, op by op in float32 (launched without FMA). The
    literals are the float32 values of the C++ constants written as exact decimals
    (1.44269504088896341f, ln2 high/low parts, 1/5040 ... 1/6 rounded to float32)."""
    x = tl.where(x < -87.0, -87.0, x)
    x = tl.where(x > 87.0, 87.0, x)
    t = x * 1.4426950216293335
    n = (t + 12582912.0) - 12582912.0                   # round to nearest integer
    r = x - n * 0.693145751953125
    r = r - n * 1.428606765330187e-06
    p = 0.00019841270113829523 * r + 0.0013888889225199819
    p = p * r + 0.008333333767950535
    p = p * r + 0.0416666679084301
    p = p * r + 0.1666666716337204
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    s = ((n.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)     # 2^n
    return p * s


def _fast_exp_kernel(x, y, n, BLOCK: tl.constexpr):
    """y = fast_exp(x) elementwise (tests compare it with the C++ function bit for bit)."""
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    v = tl.load(x + o, mask=m, other=0.0)
    v = tl.where(v == v, v, 0.0)  # noqa: PLR0124  NaN -> 0 (for the int cast inside)
    tl.store(y + o, _fast_exp_tl(v), mask=m)


def _fwd_exact_kernel(means, conics, colors, out, pair_gid, tile_start, W, row0, strip_h,
                      tiles_x, C: tl.constexpr, TILE_: tl.constexpr):
    """Exact forward: bit-identical to the CPU kernel. The tile's pairs (every drawn Gaussian,
    in increasing Gaussian index) are visited one at a time and each pixel accumulates
    acc += w * colour sequentially from 0.0, w = fast_exp(-q/2) if q <= Q_CUT else 0."""
    t = tl.program_id(0)
    ty = t // tiles_x
    tx = t - ty * tiles_x
    p = tl.arange(0, TILE_ * TILE_)
    lx = tx * TILE_ + p % TILE_
    ly = ty * TILE_ + p // TILE_
    pmask = (lx < W) & (ly < strip_h)
    pxf = lx.to(tl.float32) + 0.5
    pyf = (ly + row0).to(tl.float32) + 0.5
    acc0 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc1 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc2 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    acc3 = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    start = tl.load(tile_start + t)
    end = tl.load(tile_start + t + 1)
    for k in range(start, end):
        gid = tl.load(pair_gid + k).to(tl.int64)
        mx = tl.load(means + 2 * gid)
        my = tl.load(means + 2 * gid + 1)
        a = tl.load(conics + 3 * gid)
        b = tl.load(conics + 3 * gid + 1)
        c = tl.load(conics + 3 * gid + 2)
        dx = pxf - mx
        dy = pyf - my
        q = (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy
        keep = q <= 12.0
        x = tl.where(keep, -0.5 * q, 0.0)              # NaN q -> 0 (its weight is 0 anyway)
        w = tl.where(keep, _fast_exp_tl(x), 0.0)
        acc0 += w * tl.load(colors + C * gid)
        if C > 1:
            acc1 += w * tl.load(colors + C * gid + 1)
        if C > 2:
            acc2 += w * tl.load(colors + C * gid + 2)
        if C > 3:
            acc3 += w * tl.load(colors + C * gid + 3)
    o = ((ly + row0).to(tl.int64) * W + lx) * C
    tl.store(out + o, acc0, mask=pmask)
    if C > 1:
        tl.store(out + o + 1, acc1, mask=pmask)
    if C > 2:
        tl.store(out + o + 2, acc2, mask=pmask)
    if C > 3:
        tl.store(out + o + 3, acc3, mask=pmask)


def _bwd_tile_kernel(means, conics, colors, grad, gmeans, gconics, gcolors,
                     pair_gid, tile_start, W, row0, strip_h, tiles_x,
                     C: tl.constexpr, TILE_: tl.constexpr, BG: tl.constexpr):
    """Per-tile backward over the tile's pairs, one tl.atomic_add per (pair, field)."""
    t = tl.program_id(0)
    ty = t // tiles_x
    tx = t - ty * tiles_x
    p = tl.arange(0, TILE_ * TILE_)
    lx = tx * TILE_ + p % TILE_
    ly = ty * TILE_ + p // TILE_
    pmask = (lx < W) & (ly < strip_h)
    pxf = lx.to(tl.float32) + 0.5
    pyf = (ly + row0).to(tl.float32) + 0.5
    o = ((ly + row0).to(tl.int64) * W + lx) * C
    g0 = tl.load(grad + o, mask=pmask, other=0.0)
    g1 = g0
    g2 = g0
    g3 = g0
    if C > 1:
        g1 = tl.load(grad + o + 1, mask=pmask, other=0.0)
    if C > 2:
        g2 = tl.load(grad + o + 2, mask=pmask, other=0.0)
    if C > 3:
        g3 = tl.load(grad + o + 3, mask=pmask, other=0.0)
    start = tl.load(tile_start + t)
    end = tl.load(tile_start + t + 1)
    offs = tl.arange(0, BG)
    for s in range(start, end, BG):
        idx = s + offs
        gm = idx < end
        gid = tl.load(pair_gid + idx, mask=gm, other=0)
        mx = tl.load(means + 2 * gid, mask=gm, other=0.0)
        my = tl.load(means + 2 * gid + 1, mask=gm, other=0.0)
        a = tl.load(conics + 3 * gid, mask=gm, other=0.0)
        b = tl.load(conics + 3 * gid + 1, mask=gm, other=0.0)
        c = tl.load(conics + 3 * gid + 2, mask=gm, other=0.0)
        dx = pxf[None, :] - mx[:, None]
        dy = pyf[None, :] - my[:, None]
        q = (a[:, None] * dx + (2.0 * b)[:, None] * dy) * dx + (c[:, None] * dy) * dy
        keep = (q <= 12.0) & gm[:, None] & pmask[None, :]
        w = tl.where(keep, tl.exp(-0.5 * q), 0.0)
        dxk = tl.where(keep, dx, 0.0)
        dyk = tl.where(keep, dy, 0.0)
        c0 = tl.load(colors + C * gid, mask=gm, other=0.0)
        gs = g0[None, :] * c0[:, None]
        tl.atomic_add(gcolors + C * gid, tl.sum(w * g0[None, :], axis=1), mask=gm)
        if C > 1:
            c1 = tl.load(colors + C * gid + 1, mask=gm, other=0.0)
            gs += g1[None, :] * c1[:, None]
            tl.atomic_add(gcolors + C * gid + 1, tl.sum(w * g1[None, :], axis=1), mask=gm)
        if C > 2:
            c2 = tl.load(colors + C * gid + 2, mask=gm, other=0.0)
            gs += g2[None, :] * c2[:, None]
            tl.atomic_add(gcolors + C * gid + 2, tl.sum(w * g2[None, :], axis=1), mask=gm)
        if C > 3:
            c3 = tl.load(colors + C * gid + 3, mask=gm, other=0.0)
            gs += g3[None, :] * c3[:, None]
            tl.atomic_add(gcolors + C * gid + 3, tl.sum(w * g3[None, :], axis=1), mask=gm)
        v = w * gs
        gx = a[:, None] * dxk + b[:, None] * dyk
        gy = b[:, None] * dxk + c[:, None] * dyk
        tl.atomic_add(gmeans + 2 * gid, tl.sum(v * gx, axis=1), mask=gm)
        tl.atomic_add(gmeans + 2 * gid + 1, tl.sum(v * gy, axis=1), mask=gm)
        tl.atomic_add(gconics + 3 * gid, -0.5 * tl.sum(v * dxk * dxk, axis=1), mask=gm)
        tl.atomic_add(gconics + 3 * gid + 1, -tl.sum(v * dxk * dyk, axis=1), mask=gm)
        tl.atomic_add(gconics + 3 * gid + 2, -0.5 * tl.sum(v * dyk * dyk, axis=1), mask=gm)


def _bwd_gauss_kernel(means, conics, colors, grad, gmeans, gconics, gcolors,
                      ids, n_ids, rect, W, row0, strip_h,
                      C: tl.constexpr, TILE_: tl.constexpr):
    """Per-Gaussian backward: program i owns Gaussian ids[i] (i < n_ids) and walks the tiles
    of its rectangle in a fixed order; gradients are added to the output with a plain
    load-add-store (each Gaussian appears once per launch). Deterministic."""
    i = tl.program_id(0)
    active = i < tl.load(n_ids)
    g = tl.load(ids + i, mask=active, other=0)
    tx0 = tl.load(rect + 4 * g)
    tx1 = tl.load(rect + 4 * g + 1)
    ty0 = tl.load(rect + 4 * g + 2)
    ty1 = tl.load(rect + 4 * g + 3)
    nx = tx1 - tx0 + 1
    ny = ty1 - ty0 + 1
    cnt = tl.where(active & (nx > 0) & (ny > 0), nx * ny, 0)
    nxs = tl.maximum(nx, 1)
    mx = tl.load(means + 2 * g)
    my = tl.load(means + 2 * g + 1)
    a = tl.load(conics + 3 * g)
    b = tl.load(conics + 3 * g + 1)
    c = tl.load(conics + 3 * g + 2)
    c0 = tl.load(colors + C * g)
    c1 = c0
    c2 = c0
    c3 = c0
    if C > 1:
        c1 = tl.load(colors + C * g + 1)
    if C > 2:
        c2 = tl.load(colors + C * g + 2)
    if C > 3:
        c3 = tl.load(colors + C * g + 3)
    p = tl.arange(0, TILE_ * TILE_)
    zero = tl.zeros([TILE_ * TILE_], dtype=tl.float32)
    s_mx = zero
    s_my = zero
    s_a = zero
    s_b = zero
    s_c = zero
    s_c0 = zero
    s_c1 = zero
    s_c2 = zero
    s_c3 = zero
    for k in range(cnt):
        ty = ty0 + k // nxs
        tx = tx0 + k % nxs
        lx = tx * TILE_ + p % TILE_
        ly = ty * TILE_ + p // TILE_
        pmask = (lx < W) & (ly < strip_h)
        pxf = lx.to(tl.float32) + 0.5
        pyf = (ly + row0).to(tl.float32) + 0.5
        dx = pxf - mx
        dy = pyf - my
        q = (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy
        keep = (q <= 12.0) & pmask
        w = tl.where(keep, tl.exp(-0.5 * q), 0.0)
        dxk = tl.where(keep, dx, 0.0)
        dyk = tl.where(keep, dy, 0.0)
        o = ((ly + row0).to(tl.int64) * W + lx) * C
        g0 = tl.load(grad + o, mask=pmask, other=0.0)
        gs = g0 * c0
        s_c0 += w * g0
        if C > 1:
            g1 = tl.load(grad + o + 1, mask=pmask, other=0.0)
            gs += g1 * c1
            s_c1 += w * g1
        if C > 2:
            g2 = tl.load(grad + o + 2, mask=pmask, other=0.0)
            gs += g2 * c2
            s_c2 += w * g2
        if C > 3:
            g3 = tl.load(grad + o + 3, mask=pmask, other=0.0)
            gs += g3 * c3
            s_c3 += w * g3
        v = w * gs
        s_mx += v * (a * dxk + b * dyk)
        s_my += v * (b * dxk + c * dyk)
        s_a += v * dxk * dxk
        s_b += v * dxk * dyk
        s_c += v * dyk * dyk
    tl.store(gmeans + 2 * g, tl.load(gmeans + 2 * g) + tl.sum(s_mx, axis=0), mask=active)
    tl.store(gmeans + 2 * g + 1, tl.load(gmeans + 2 * g + 1) + tl.sum(s_my, axis=0),
             mask=active)
    tl.store(gconics + 3 * g, tl.load(gconics + 3 * g) - 0.5 * tl.sum(s_a, axis=0),
             mask=active)
    tl.store(gconics + 3 * g + 1, tl.load(gconics + 3 * g + 1) - tl.sum(s_b, axis=0),
             mask=active)
    tl.store(gconics + 3 * g + 2, tl.load(gconics + 3 * g + 2) - 0.5 * tl.sum(s_c, axis=0),
             mask=active)
    tl.store(gcolors + C * g, tl.load(gcolors + C * g) + tl.sum(s_c0, axis=0), mask=active)
    if C > 1:
        tl.store(gcolors + C * g + 1, tl.load(gcolors + C * g + 1) + tl.sum(s_c1, axis=0),
                 mask=active)
    if C > 2:
        tl.store(gcolors + C * g + 2, tl.load(gcolors + C * g + 2) + tl.sum(s_c2, axis=0),
                 mask=active)
    if C > 3:
        tl.store(gcolors + C * g + 3, tl.load(gcolors + C * g + 3) + tl.sum(s_c3, axis=0),
                 mask=active)


def _kernels(interpret: bool) -> dict:
    """The jitted kernels for this mode (interpreted or compiled), decorated on first use."""
    ks = _kernel_cache.get(interpret)
    if ks is None:
        global tl
        triton = _import_triton()
        if triton is None:
            raise RuntimeError(_import_error)
        import triton.language
        tl = triton.language
        old = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
        try:
            ks = {f.__name__: triton.jit(f)
                  for f in (_fast_exp, _fwd_kernel, _fwd_exact_kernel, _fast_exp_kernel,
                            _bwd_tile_kernel, _bwd_gauss_kernel)}
        finally:
            if old is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = old
        _kernel_cache[interpret] = ks
    global _fast_exp_tl
    if _fast_exp_tl is not ks["_fast_exp"]:
        _fast_exp_tl = ks["_fast_exp"]
    return ks


# Launch options. enable_fp_fusion=False keeps q free of FMA (accepted as a launch keyword
# by Triton 3.x, compiled and interpreted alike).
_LAUNCH = {"num_warps": NUM_WARPS, "enable_fp_fusion": False}


# ---------------------------------------------------------------------------------------------
# Binning (device-side, sync-free torch ops).
# ---------------------------------------------------------------------------------------------

class Binning(NamedTuple):
    rect: torch.Tensor        # [N, 4] int32 tile rectangle (tx0, tx1, ty0, ty1) in the strip;
    #                           empty (tx1 < tx0) where the Gaussian draws nothing here
    count: torch.Tensor       # [N] int64 tiles in the rectangle
    pair_gid: torch.Tensor    # [P] int32 Gaussian of each pair, sorted by tile (stable)
    pair_tile: torch.Tensor   # [P] int32 sorted tile ids; tiles (= T) marks unused slots
    tile_start: torch.Tensor  # [T + 1] int32: tile t's pairs are [tile_start[t], [t+1])
    big_ids: torch.Tensor     # [N] int32: first n_big entries = Gaussians not in the pairs
    n_big: torch.Tensor       # [1] int32
    total_pairs: torch.Tensor  # [] int64 pairs the pair-eligible Gaussians asked for
    overflow: torch.Tensor    # [] bool: total_pairs > capacity (speed only, not correctness)
    tiles_x: int
    tiles_y: int


def default_capacity(n: int, tiles: int) -> int:
    return max(1, PAIRS_PER_GAUSSIAN * n + PAIRS_PER_TILE * tiles)


def bin_gaussians(means: torch.Tensor, conics: torch.Tensor, row0: int, strip_h: int,
                  width: int, *, pair_capacity: int | None = None,
                  max_tiles: int = MAX_TILES_PER_GAUSSIAN, exact: bool = False) -> Binning:
    """Bin N Gaussians into the 16x16 tiles of rows [row0, row0 + strip_h) of a `width`-wide
    image. Sync-free; every output shape depends only on N, strip_h, width and capacity.
    exact=True (the exact forward): every drawn Gaussian goes into the pair list, whatever
    the number of its tiles, and the buffer holds exactly the pairs needed (one host sync,
    .item(); pair_capacity and max_tiles are ignored), so n_big is 0 and each tile's pairs
    are in increasing Gaussian index."""
    dev = means.device
    n = means.shape[0]
    tiles_x = -(-width // TILE)
    tiles_y = -(-strip_h // TILE)
    T = tiles_x * tiles_y
    P = int(pair_capacity) if pair_capacity is not None else default_capacity(n, T)
    P = max(P, 1)
    m = means.detach().to(torch.float32)
    q = conics.detach().to(torch.float32)
    a, b, c = q[:, 0], q[:, 1], q[:, 2]
    finite = torch.isfinite(m).all(dim=1) & torch.isfinite(q).all(dim=1)
    valid = finite & (a > 0) & ((a * c - b * b) > 0)          # float32, as the contract says
    a64, b64, c64 = a.double(), b.double(), c.double()
    det = a64 * c64 - b64 * b64                                 # exact products in float64
    ok = valid & (det > 0)
    det_s = torch.where(ok, det, torch.ones_like(det))
    inf = torch.full_like(det, math.inf)
    rx = torch.where(ok, torch.sqrt(Q_CUT * torch.where(ok, c64, inf.new_ones(())) / det_s), inf)
    ry = torch.where(ok, torch.sqrt(Q_CUT * torch.where(ok, a64, inf.new_ones(())) / det_s), inf)
    zero = torch.zeros_like(det)
    mx = torch.where(valid, m[:, 0].double(), zero)
    my = torch.where(valid, m[:, 1].double(), zero) - float(row0)
    # Pixel centres j + 0.5 within [mean - r, mean + r], widened by one pixel (CPU kernel).
    xlo = torch.floor(mx - rx - 0.5) - 1.0
    xhi = torch.ceil(mx + rx - 0.5) + 1.0
    ylo = torch.floor(my - ry - 0.5) - 1.0
    yhi = torch.ceil(my + ry - 0.5) + 1.0
    on = valid & (xhi >= 0) & (xlo <= width - 1) & (yhi >= 0) & (ylo <= strip_h - 1)
    # Clamp in floating point before converting (values may be +-inf or huge).
    tx0 = torch.div(xlo.clamp(0, width - 1), TILE, rounding_mode="floor").to(torch.int32)
    tx1 = torch.div(xhi.clamp(0, width - 1), TILE, rounding_mode="floor").to(torch.int32)
    ty0 = torch.div(ylo.clamp(0, strip_h - 1), TILE, rounding_mode="floor").to(torch.int32)
    ty1 = torch.div(yhi.clamp(0, strip_h - 1), TILE, rounding_mode="floor").to(torch.int32)
    tx1 = torch.where(on, tx1, tx0 - 1)                         # empty rectangle
    rect = torch.stack([tx0, tx1, ty0, ty1], dim=1).contiguous()
    nx = (tx1 - tx0 + 1).to(torch.int64)
    ny = (ty1 - ty0 + 1).to(torch.int64)
    count = torch.where(on, nx * ny, torch.zeros_like(nx))
    if exact:
        P = max(1, int(count.sum().item()))                    # the one host sync
        max_tiles = T

    # Pairs: counts -> cumsum offsets -> fill (slot -> owner by searchsorted) -> sort by tile.
    eligible = on & (count <= max_tiles)
    pc = torch.where(eligible, count, torch.zeros_like(count))
    end = torch.cumsum(pc, dim=0)
    start = end - pc
    in_pairs = eligible & (end <= P)
    total_pairs = end[-1] if n > 0 else torch.zeros((), dtype=torch.int64, device=dev)
    slots = torch.arange(P, dtype=torch.int64, device=dev)
    owner = torch.searchsorted(end, slots, right=True)          # first g with end[g] > slot
    oc = owner.clamp(max=max(n - 1, 0))
    used = (owner < n) & in_pairs[oc] if n > 0 else torch.zeros(P, dtype=torch.bool, device=dev)
    if n > 0:
        k = slots - start[oc]
        nxo = nx[oc].clamp(min=1)
        tile = (ty0[oc].to(torch.int64) + torch.div(k, nxo, rounding_mode="floor")) * tiles_x \
            + tx0[oc].to(torch.int64) + torch.remainder(k, nxo)
        key = torch.where(used, tile, torch.full_like(tile, T)).to(torch.int32)
    else:
        key = torch.full((P,), T, dtype=torch.int32, device=dev)
        oc = torch.zeros(P, dtype=torch.int64, device=dev)
    pair_tile, perm = torch.sort(key, stable=True)              # ties keep Gaussian order
    pair_gid = oc[perm].to(torch.int32).contiguous()
    tile_start = torch.searchsorted(
        pair_tile, torch.arange(T + 1, dtype=torch.int32, device=dev), out_int32=True)

    # Big list: drawn Gaussians not in the pairs, compacted by cumsum + unique-index scatter.
    big = on & ~in_pairs
    ar = torch.arange(n, dtype=torch.int64, device=dev)
    pos = torch.cumsum(big.to(torch.int64), dim=0) - 1
    dest = torch.where(big, pos, n + ar)
    big_buf = torch.zeros(2 * n, dtype=torch.int32, device=dev)
    big_buf.scatter_(0, dest, ar.to(torch.int32))
    big_ids = big_buf[:n].contiguous()
    n_big = big.sum(dtype=torch.int32).reshape(1)
    return Binning(rect, count, pair_gid, pair_tile.contiguous(), tile_start.contiguous(),
                   big_ids, n_big, total_pairs, total_pairs > P, tiles_x, tiles_y)


# ---------------------------------------------------------------------------------------------
# Launchers and the autograd Function.
# ---------------------------------------------------------------------------------------------

def _check_device(t: torch.Tensor) -> bool:
    """True for interpreted kernels (CPU tensors), False for compiled ones (CUDA tensors)."""
    if t.device.type == "cuda":
        return False
    if t.device.type == "cpu":
        if not interpreter_active():
            raise RuntimeError("render backend 'cuda' got CPU tensors; these run only under "
                               "Triton's interpreter (TRITON_INTERPRET=1)")
        return True
    raise ValueError(f"render backend 'cuda' cannot run on device {t.device}")


def _strips(height: int, strip_rows: int):
    strip_rows = max(TILE, (int(strip_rows) // TILE) * TILE)
    for row0 in range(0, height, strip_rows):
        yield row0, min(strip_rows, height - row0)


def _forward(m, q, c, height, width, opts, keep_bins):
    interp = _check_device(m)
    ks = _kernels(interp)
    C = c.shape[1]
    out = torch.empty(height, width, C, dtype=torch.float32, device=m.device)
    bins = []
    for row0, sh in _strips(height, opts["strip_rows"]):
        if opts.get("exact"):
            bn = bin_gaussians(m, q, row0, sh, width, exact=True)
            T = bn.tiles_x * bn.tiles_y
            ks["_fwd_exact_kernel"][(T,)](m, q, c, out, bn.pair_gid, bn.tile_start, width, row0,
                                          sh, bn.tiles_x, C=C, TILE_=TILE, **_LAUNCH)
            bins.append((row0, sh, None))     # backward bins again, the normal way
            continue
        bn = bin_gaussians(m, q, row0, sh, width, pair_capacity=opts["pair_capacity"],
                           max_tiles=opts["max_tiles"])
        T = bn.tiles_x * bn.tiles_y
        ks["_fwd_kernel"][(T,)](m, q, c, out, bn.pair_gid, bn.tile_start, bn.big_ids, bn.n_big,
                                bn.rect, width, row0, sh, bn.tiles_x,
                                C=C, TILE_=TILE, BG=BATCH_INTERPRET if interp else BATCH,
                                **_LAUNCH)
        bins.append((row0, sh, bn) if keep_bins else (row0, sh, None))
    return out, bins


def _backward(m, q, c, grad, height, width, opts, bins, deterministic):
    interp = _check_device(m)
    ks = _kernels(interp)
    n, C = c.shape
    gm = torch.zeros_like(m)
    gq = torch.zeros_like(q)
    gc = torch.zeros_like(c)
    all_ids = torch.arange(n, dtype=torch.int32, device=m.device)
    n_all = torch.full((1,), n, dtype=torch.int32, device=m.device)
    for row0, sh, bn in bins:
        if bn is None:
            bn = bin_gaussians(m, q, row0, sh, width, pair_capacity=opts["pair_capacity"],
                               max_tiles=opts["max_tiles"])
        if deterministic:
            ks["_bwd_gauss_kernel"][(n,)](m, q, c, grad, gm, gq, gc, all_ids, n_all, bn.rect,
                                          width, row0, sh, C=C, TILE_=TILE, **_LAUNCH)
        else:
            T = bn.tiles_x * bn.tiles_y
            ks["_bwd_tile_kernel"][(T,)](m, q, c, grad, gm, gq, gc, bn.pair_gid, bn.tile_start,
                                         width, row0, sh, bn.tiles_x,
                                         C=C, TILE_=TILE, BG=BATCH_INTERPRET if interp else BATCH,
                                **_LAUNCH)
            ks["_bwd_gauss_kernel"][(n,)](m, q, c, grad, gm, gq, gc, bn.big_ids, bn.n_big,
                                          bn.rect, width, row0, sh, C=C, TILE_=TILE,
                                          **_LAUNCH)
    return gm, gq, gc


class _RenderTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, height, width, deterministic, opts):
        m = means.detach().to(torch.float32).contiguous()
        q = conics.detach().to(torch.float32).contiguous()
        c = colors.detach().to(torch.float32).contiguous()
        n, C = c.shape
        n_strips = -(-height // max(TILE, opts["strip_rows"])) if height > 0 else 0
        if n == 0 or height == 0 or width == 0:
            out, bins = torch.zeros(height, width, C, dtype=torch.float32, device=m.device), []
        else:
            # Keep the binning for backward unless there are many strips (memory).
            keep = not deterministic and not opts.get("exact") and n_strips <= 4 \
                and any(ctx.needs_input_grad[:3])
            out, bins = _forward(m, q, c, height, width, opts, keep)
        ctx.save_for_backward(m, q, c)
        ctx.bins = bins
        ctx.meta = (height, width, deterministic, opts,
                    (means.dtype, conics.dtype, colors.dtype))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        m, q, c = ctx.saved_tensors
        height, width, deterministic, opts, dts = ctx.meta
        if m.shape[0] == 0 or not ctx.bins:
            gm, gq, gc = torch.zeros_like(m), torch.zeros_like(q), torch.zeros_like(c)
        else:
            grad = grad_out.to(torch.float32).contiguous()
            gm, gq, gc = _backward(m, q, c, grad, height, width, opts, ctx.bins, deterministic)
        ctx.bins = None
        return (gm.to(dts[0]) if ctx.needs_input_grad[0] else None,
                gq.to(dts[1]) if ctx.needs_input_grad[1] else None,
                gc.to(dts[2]) if ctx.needs_input_grad[2] else None, None, None, None, None)


def fast_exp(x: torch.Tensor) -> torch.Tensor:
    """The exact mode's exp (float32 tensor on the backend's device -> same shape): the CPU
    kernel's fast_exp bit for bit (NaN maps to fast_exp(0) = 1 here). For tests."""
    interp = _check_device(x)
    ks = _kernels(interp)
    xf = x.detach().to(torch.float32).contiguous().reshape(-1)
    y = torch.empty_like(xf)
    n = xf.numel()
    if n:
        block = 1024
        ks["_fast_exp_kernel"][(-(-n // block),)](xf, y, n, BLOCK=block, **_LAUNCH)
    return y.reshape(x.shape)


def render_cuda(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
                height: int, width: int, *, deterministic: bool = False,
                strip_rows: int = STRIP_ROWS, pair_capacity: int | None = None,
                max_tiles: int = MAX_TILES_PER_GAUSSIAN, exact: bool = False,
                waves: torch.Tensor | None = None) -> torch.Tensor:
    """Render [height, width, C] float32 by the contract of `gscodec.render` with Triton.
    Differentiable w.r.t. means, conics, colors. deterministic=True: bit-identical backward
    across runs (per-Gaussian reduction, no atomics). strip_rows, pair_capacity and max_tiles
    tune memory and speed only (see the module docstring); the result never depends on them
    beyond float summation order.

    exact=True: the forward is bit-identical to the CPU kernel (gscodec.render.kernel), hence
    so are the decoder's 8-bit pixels: the CPU kernel's polynomial exp (fast_exp) instead of
    tl.exp, and per pixel a sequential sum in increasing Gaussian index from 0.0 (no tree
    reductions, no big list: every drawn Gaussian goes into the pair list, sized exactly
    with one host sync per strip, so not CUDA-graph capturable). pair_capacity and
    max_tiles are then ignored by the forward. Meant for decoding (forward only); if a
    gradient is asked for, backward is the normal closed form (re-binned, tl.exp), i.e. the
    gradient of the normal mode's image, which equals this one up to float rounding.

    waves (format version 5): not drawn yet, NotImplementedError if they matter."""
    refuse_waves(waves, "cuda")
    if means.dim() != 2 or means.shape[1] != 2 or conics.shape != (means.shape[0], 3) \
            or colors.dim() != 2 or colors.shape[0] != means.shape[0] \
            or not 1 <= colors.shape[1] <= 4:
        raise ValueError(f"bad shapes: means {tuple(means.shape)}, conics "
                         f"{tuple(conics.shape)}, colors {tuple(colors.shape)} (C must be 1..4)")
    if not (means.device == conics.device == colors.device):
        raise ValueError("means, conics and colors must be on the same device")
    height, width = int(height), int(width)
    if height < 0 or width < 0:
        raise ValueError(f"bad image size {height}x{width}")
    _check_device(means)
    opts = {"strip_rows": int(strip_rows), "pair_capacity": pair_capacity,
            "max_tiles": int(max_tiles), "exact": bool(exact)}
    return _RenderTriton.apply(means, conics, colors, height, width, bool(deterministic), opts)
