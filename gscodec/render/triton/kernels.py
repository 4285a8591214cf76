"""The Triton kernels of the GPU backend, and the one path through which they are launched.

Imported on first use. Whether they run compiled (CUDA tensors) or under Triton's
interpreter (CPU tensors, TRITON_INTERPRET=1) is decided when this module is imported, as
Triton itself decides it when it is first imported.

What a pixel gets from a Gaussian is written once per mode, in `_weight` (normal mode: the
contract, tl.exp) and `_weight_exact` (exact mode: spec section 10 to the bit): a new
primitive changes those two functions (and the backward's derivatives of `_weight`).

Every kernel is launched with enable_fp_fusion=False (no FMA: the contract's q order, and
the exact mode's float32 and float64 operations) and with integer arguments unspecialised
(`do_not_specialize`): an argument equal to 1 or divisible by 16 would otherwise compile a
kernel of its own, 0.2-2 s each on first use.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

from ..common import Q_CUT

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes",
                                                                           "on")
TILE = 16                        # tiles are TILE x TILE pixels
NUM_WARPS = 4
# Block sizes: the largest without register spills on sm_80 and sm_90 (compile check,
# docs/experiments.md 2026-12-05 "The GPU path without a GPU").
BIN_BLOCK = 256                  # Gaussians per program of the rectangle kernel
SLOT_BLOCK = 512                 # slots per program of the fill and ranges kernels
BATCH = 16                       # Gaussians per inner batch of the forward tile kernel (GPU):
#                                  [16, 256] fp32 blocks = 32 registers/thread at 4 warps
BATCH_BWD = 8                    # the backward's blocks: more live tensors (16 spilled)
BATCH_INTERPRET = 32             # under the interpreter: fewer, larger numpy steps
SPLIT = 16                       # a big-list Gaussian's backward is split in SPLIT parts
#                                  (a full-image Gaussian: 1536 tiles -> 96 per program)
# Launch options: no FMA (see the module docstring); accepted by Triton 3.x compiled and
# interpreted alike.
LAUNCH = {"num_warps": NUM_WARPS, "enable_fp_fusion": False}

QCUT = tl.constexpr(Q_CUT)       # the cut-off, from gscodec/render/common.py
_INF = tl.constexpr(float("inf"))


def _jit(*int_args):
    """triton.jit without specialisation on the named integer arguments."""
    return lambda fn: triton.jit(fn, do_not_specialize=list(int_args))


def launch(kernel, grid, *args, **kwargs):
    """Launch `kernel` on `grid`: every launch of the backend goes through here (the tests
    count launches by wrapping it)."""
    kernel[grid](*args, **kwargs, **LAUNCH)


# ---- the per-pixel weight ----------------------------------------------------------------

@triton.jit
def _q(dx, dy, a, b, c):
    """The contract's q in its float32 order (each operation rounded, no FMA)."""
    return (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy


@triton.jit
def _weight(dx, dy, a, b, c):
    """Normal mode: (exp(-q/2) where q <= Q_CUT else 0, q <= Q_CUT)."""
    q = _q(dx, dy, a, b, c)
    keep = q <= QCUT
    return tl.where(keep, tl.exp(-0.5 * tl.where(keep, q, 0.0)), 0.0), keep


@triton.jit
def _fast_exp(x):
    """spec 10.3 (csrc/raster_kernels.h's fast_exp) op by op in float32. The literals are
    the float32 constants written as exact decimals (log2(e), ln2 high/low parts,
    1/5040 ... 1/6 rounded to float32)."""
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


@triton.jit
def _weight_exact(dx, dy, a, b, c):
    """Exact mode (spec 10.3): fast_exp(-q/2) where q <= Q_CUT, else 0."""
    q = _q(dx, dy, a, b, c)
    keep = q <= QCUT
    return tl.where(keep, _fast_exp(tl.where(keep, -0.5 * q, 0.0)), 0.0)


@triton.jit
def _finite(x):
    return tl.abs(x) < _INF                             # false for +-inf and NaN


# ---- binning -------------------------------------------------------------------------------

@_jit("n", "width", "strip_h", "row0", "tiles_x", "max_tiles")
def _rect_kernel(means, conics, rect, cnt, rows, n, xs, ys, width, strip_h, row0, tiles_x,
                 max_tiles, BLOCK: tl.constexpr):
    """Per Gaussian: its tile rectangle in the strip (rows [row0, row0 + strip_h) of the
    shifted means' frame) and, for the cumulative sums, [pairs if it goes to the pair list,
    1 if it is drawn but has more than max_tiles tiles, 1 if it goes to the pair list].
    The box is the kernel's candidate box (spec 10.2) widened by one more pixel, so that it
    holds every row span whatever the rounding. rows[g] = the spec's candidate rows
    (ylo, yhi) in the shifted frame, float64, (+inf, -inf) where the box misses the image
    columns (for the exact kernel)."""
    g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = g < n
    g64 = g.to(tl.int64)
    mx = tl.load(means + 2 * g64, mask=live, other=0.0) - xs
    my = tl.load(means + 2 * g64 + 1, mask=live, other=0.0) - ys
    a = tl.load(conics + 3 * g64, mask=live, other=1.0)
    b = tl.load(conics + 3 * g64 + 1, mask=live, other=0.0)
    c = tl.load(conics + 3 * g64 + 2, mask=live, other=1.0)
    valid = live & _finite(mx) & _finite(my) & _finite(a) & _finite(b) & _finite(c)
    valid = valid & (a > 0.0) & (a * c - b * b > 0.0)
    a64 = tl.where(valid, a, 1.0).to(tl.float64)
    b64 = tl.where(valid, b, 0.0).to(tl.float64)
    c64 = tl.where(valid, c, 1.0).to(tl.float64)
    det = a64 * c64 - b64 * b64
    pos = det > 0.0
    det_s = tl.where(pos, det, 1.0)
    rx = tl.where(pos, tl.sqrt(c64 * QCUT / det_s), _INF)
    ry = tl.where(pos, tl.sqrt(a64 * QCUT / det_s), _INF)
    mx64 = tl.where(valid, mx, 0.0).to(tl.float64)
    my64 = tl.where(valid, my, 0.0).to(tl.float64)
    xlo = tl.floor(mx64 - rx - 0.5) - 1.0              # spec 10.2 (csrc's setup())
    xhi = tl.ceil(mx64 + rx - 0.5) + 1.0
    ylo = tl.floor(my64 - ry - 0.5) - 1.0
    yhi = tl.ceil(my64 + ry - 0.5) + 1.0
    box = (xhi >= 0.0) & (xlo <= width - 1)
    tl.store(rows + 2 * g64, tl.where(box, ylo, _INF), mask=live)
    tl.store(rows + 2 * g64 + 1, tl.where(box, yhi, -_INF), mask=live)
    xlo -= 1.0                                          # one pixel more for the tiles,
    xhi += 1.0                                          # rows relative to the strip
    ylo -= 1.0 + row0
    yhi += 1.0 - row0
    on = valid & (xhi >= 0.0) & (xlo <= width - 1) & (yhi >= 0.0) & (ylo <= strip_h - 1)
    # Clamp in floating point before converting (values may be +-inf or huge).
    tx0 = (tl.minimum(tl.maximum(xlo, 0.0), width - 1.0).to(tl.int32)) // 16
    tx1 = (tl.minimum(tl.maximum(xhi, 0.0), width - 1.0).to(tl.int32)) // 16
    ty0 = (tl.minimum(tl.maximum(ylo, 0.0), strip_h - 1.0).to(tl.int32)) // 16
    ty1 = (tl.minimum(tl.maximum(yhi, 0.0), strip_h - 1.0).to(tl.int32)) // 16
    tx1 = tl.where(on, tx1, tx0 - 1)                    # empty rectangle
    count = tl.where(on, ((tx1 - tx0 + 1) * (ty1 - ty0 + 1)).to(tl.int64), 0)
    eligible = on & (count <= max_tiles)
    tl.store(rect + 4 * g64, tx0, mask=live)
    tl.store(rect + 4 * g64 + 1, tx1, mask=live)
    tl.store(rect + 4 * g64 + 2, ty0, mask=live)
    tl.store(rect + 4 * g64 + 3, ty1, mask=live)
    tl.store(cnt + 3 * g64, tl.where(eligible, count, 0), mask=live)
    tl.store(cnt + 3 * g64 + 1, (on & ~eligible).to(tl.int64), mask=live)
    tl.store(cnt + 3 * g64 + 2, eligible.to(tl.int64), mask=live)


@_jit("g0", "g1", "base", "P", "tiles_x", "T", "steps")
def _fill_kernel(cum, rect, keys, vals, g0, g1, base, P, tiles_x, T, steps,
                 BLOCK: tl.constexpr):
    """Pair slot s of the Gaussians [g0, g1) (slot base + s of the cumulative pair counts):
    its owner by binary search of the inclusive sums cum[:, 0], its tile, in the owner's
    rectangle in raster order. Slots past the pairs, or of a Gaussian whose pairs end past
    P + base (normal mode: it goes to the big list), get the key T (unused)."""
    s = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = s < P
    slot = s + base
    lo = tl.zeros([BLOCK], dtype=tl.int64) + g0
    hi = tl.zeros([BLOCK], dtype=tl.int64) + g1
    for _ in range(steps):                              # first g with end[g] > slot
        open_ = lo < hi
        mid = (lo + hi) // 2
        e = tl.load(cum + 3 * mid, mask=open_, other=0)
        right = e <= slot
        lo = tl.where(open_ & right, mid + 1, lo)
        hi = tl.where(open_ & ~right, mid, hi)
    own = live & (lo < g1)
    o = tl.where(own, lo, g0)
    end = tl.load(cum + 3 * o, mask=own, other=0)
    prev = tl.load(cum + 3 * (o - 1), mask=own & (o > 0), other=0)
    own = own & (end - base <= P)
    k = slot - prev
    tx0 = tl.load(rect + 4 * o, mask=own, other=0)
    tx1 = tl.load(rect + 4 * o + 1, mask=own, other=0)
    ty0 = tl.load(rect + 4 * o + 2, mask=own, other=0)
    nx = tl.maximum(tx1 - tx0 + 1, 1).to(tl.int64)
    tile = (ty0 + k // nx) * tiles_x + tx0 + k % nx
    tl.store(keys + s, tl.where(own, tile, T).to(tl.int32), mask=live)
    tl.store(vals + s, tl.where(own, o, 0).to(tl.int32), mask=live)


@_jit("P", "T", "n", "steps_p", "steps_n", "cap")
def _ranges_kernel(keys, perm, vals, pair_gid, tile_start, cum, big_ids, big_pos, n_big,
                   P, T, n, steps_p, steps_n, cap, BLOCK: tl.constexpr, BIG: tl.constexpr):
    """After the stable sort by tile: pair_gid[i] = the Gaussian of sorted pair i;
    tile_start[t] = first sorted pair of tile t (t = 0..T, binary search); and with BIG the
    big list: the drawn Gaussians not in the pairs (more than max_tiles tiles, in index
    order, then those past the capacity cap, in index order), big_pos[g] = its position
    or -1, n_big[0] = their number."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_p = i < P
    src = tl.load(perm + i, mask=in_p, other=0)
    tl.store(pair_gid + i, tl.load(vals + src, mask=in_p, other=0), mask=in_p)
    in_t = i <= T
    lo = tl.zeros([BLOCK], dtype=tl.int64)
    hi = tl.zeros([BLOCK], dtype=tl.int64) + P
    for _ in range(steps_p):                            # first sorted pair with key >= i
        open_ = lo < hi
        mid = (lo + hi) // 2
        kv = tl.load(keys + mid, mask=open_ & in_t, other=0).to(tl.int64)
        right = kv < i
        lo = tl.where(open_ & right, mid + 1, lo)
        hi = tl.where(open_ & ~right, mid, hi)
    tl.store(tile_start + i, lo.to(tl.int32), mask=in_t)
    if BIG:
        # fit = the eligible Gaussians whose pairs end within the capacity (a prefix).
        glo = tl.zeros([BLOCK], dtype=tl.int64)
        ghi = tl.zeros([BLOCK], dtype=tl.int64) + n
        for _ in range(steps_n):
            open_ = glo < ghi
            gmid = (glo + ghi) // 2
            right = tl.load(cum + 3 * gmid, mask=open_, other=0) <= cap
            glo = tl.where(open_ & right, gmid + 1, glo)
            ghi = tl.where(open_ & ~right, gmid, ghi)
        fit = tl.load(cum + 3 * (glo - 1) + 2, mask=glo > 0, other=0)
        n_nonelig = tl.load(cum + 3 * (n - 1) + 1)
        n_elig = tl.load(cum + 3 * (n - 1) + 2)
        in_n = i < n
        c1 = tl.load(cum + 3 * i + 1, mask=in_n, other=0)
        c2 = tl.load(cum + 3 * i + 2, mask=in_n, other=0)
        p1 = tl.load(cum + 3 * (i - 1) + 1, mask=in_n & (i > 0), other=0)
        p2 = tl.load(cum + 3 * (i - 1) + 2, mask=in_n & (i > 0), other=0)
        end = tl.load(cum + 3 * i, mask=in_n, other=0)
        nonelig = (c1 - p1) > 0
        over = ((c2 - p2) > 0) & (end > cap)
        pos = tl.where(nonelig, c1 - 1, n_nonelig + (c2 - 1 - fit))
        big = in_n & (nonelig | over)
        tl.store(big_ids + pos, i.to(tl.int32), mask=big)
        tl.store(big_pos + i, tl.where(big, pos, -1).to(tl.int32), mask=in_n)
        tl.store(n_big + i, (n_nonelig + n_elig - fit).to(tl.int32), mask=i == 0)


# ---- forward -------------------------------------------------------------------------------

@_jit("W", "row0", "strip_h", "tiles_x")
def _fwd_kernel(means, conics, colors, out, pair_gid, tile_start, big_ids, n_big, rect,
                W, row0, strip_h, tiles_x,
                C: tl.constexpr, TILE_: tl.constexpr, BG: tl.constexpr):
    """Normal forward: one program per tile; its pairs, then the big list (each tested
    against its rectangle), in batches of BG Gaussians, in a fixed order."""
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
    total = npairs + tl.load(n_big)
    offs = tl.arange(0, BG)
    # One index space: [0, npairs) are this tile's pairs, [npairs, total) the big list.
    for s in range(0, total, BG):
        idx = s + offs
        live = idx < total
        from_pairs = idx < npairs
        pid_ = tl.load(pair_gid + start + idx, mask=from_pairs, other=0)
        bid_ = tl.load(big_ids + (idx - npairs), mask=live & (idx >= npairs), other=0)
        gid = tl.where(from_pairs, pid_, bid_).to(tl.int64)
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
            w, keep = _weight(pxf[None, :] - mx[:, None], pyf[None, :] - my[:, None],
                              a[:, None], b[:, None], c[:, None])
            w = tl.where(keep & hit[:, None], w, 0.0)
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
    _store4(out, ((ly + row0).to(tl.int64) * W + lx) * C, pmask, acc0, acc1, acc2, acc3, C)


@triton.jit
def _candidates(mx, my, a, b, c, ylo, yhi, pyf, rowd, colf):
    """spec 10.2: the pixels of the tile where a Gaussian is evaluated: the row within its
    candidate rows [ylo, yhi] (from _rect_kernel), the column within the row's span, solved
    in float64 in the order of csrc/raster_kernels.h's row_span(). Rows [TILE, 1], columns
    [1, TILE]; returns [TILE, TILE] and dy [TILE, 1] (float32)."""
    a64 = a.to(tl.float64)
    b64 = b.to(tl.float64)
    det = a64 * c.to(tl.float64) - b64 * b64
    dy = pyf - my
    dy64 = dy.to(tl.float64)
    disc = a64 * QCUT - (det * dy64) * dy64
    disc = tl.where(disc > 0.0, disc, 0.0)
    half = tl.sqrt(disc) / a64
    xc = mx.to(tl.float64) - (b64 * dy64) / a64
    lo = tl.floor((xc - half) - 0.5) - 1.0
    hi = tl.ceil((xc + half) - 0.5) + 1.0
    row_ok = (rowd >= ylo) & (rowd <= yhi)
    return row_ok & (colf >= lo) & (colf <= hi), dy


@_jit("W", "row0", "strip_h", "tiles_x", "load_acc", "store_u8")
def _fwd_exact_kernel(means, conics, colors, rows, out, out_u8, pair_gid, tile_start, xs, ys,
                      W, row0, strip_h, tiles_x, load_acc, store_u8, C: tl.constexpr,
                      TILE_: tl.constexpr):
    """Exact forward (spec section 10): the tile's pairs, every drawn Gaussian in increasing
    index, one at a time; per pixel acc += w * colour from +0.0 (or, if load_acc, from
    the partial sums of the previous chunk of Gaussians in `out`). Means are moved by
    (-xs, -ys) in float32 first. Writes float32 to `out` or, if store_u8, the 8-bit
    pixels (spec 10.4) to `out_u8`; both [strip rows + row0, W, C]. (The two flags are
    run-time arguments: one compiled kernel per C.)"""
    t = tl.program_id(0)
    ty = t // tiles_x
    tx = t - ty * tiles_x
    ly = ty * TILE_ + tl.arange(0, TILE_)[:, None]
    lx = tx * TILE_ + tl.arange(0, TILE_)[None, :]
    pmask = (lx < W) & (ly < strip_h)
    pxf = lx.to(tl.float32) + 0.5
    pyf = (ly + row0).to(tl.float32) + 0.5
    rowd = (ly + row0).to(tl.float64)
    colf = lx.to(tl.float64)
    o = ((ly + row0).to(tl.int64) * W + lx) * C
    lmask = pmask & ((lx * 0 + load_acc) != 0)          # else: acc from +0.0
    acc0 = tl.load(out + o, mask=lmask, other=0.0)
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    if C > 1:
        acc1 = tl.load(out + o + 1, mask=lmask, other=0.0)
    if C > 2:
        acc2 = tl.load(out + o + 2, mask=lmask, other=0.0)
    if C > 3:
        acc3 = tl.load(out + o + 3, mask=lmask, other=0.0)
    start = tl.load(tile_start + t)
    end = tl.load(tile_start + t + 1)
    for k in range(start, end):
        gid = tl.load(pair_gid + k).to(tl.int64)
        mx = tl.load(means + 2 * gid) - xs
        my = tl.load(means + 2 * gid + 1) - ys
        a = tl.load(conics + 3 * gid)
        b = tl.load(conics + 3 * gid + 1)
        c = tl.load(conics + 3 * gid + 2)
        cand, dy = _candidates(mx, my, a, b, c, tl.load(rows + 2 * gid),
                               tl.load(rows + 2 * gid + 1), pyf, rowd, colf)
        w = tl.where(cand, _weight_exact(pxf - mx, dy, a, b, c), 0.0)
        acc0 += w * tl.load(colors + C * gid)
        if C > 1:
            acc1 += w * tl.load(colors + C * gid + 1)
        if C > 2:
            acc2 += w * tl.load(colors + C * gid + 2)
        if C > 3:
            acc3 += w * tl.load(colors + C * gid + 3)
    u8 = (lx * 0 + store_u8) != 0
    _store4(out_u8, o, pmask & u8, _to_u8(acc0), _to_u8(acc1), _to_u8(acc2), _to_u8(acc3), C)
    _store4(out, o, pmask & ~u8, acc0, acc1, acc2, acc3, C)


@triton.jit
def _store4(ptr, o, mask, v0, v1, v2, v3, C: tl.constexpr):
    """Channels 0..C-1 of interleaved pixels at offsets o."""
    tl.store(ptr + o, v0, mask=mask)
    if C > 1:
        tl.store(ptr + o + 1, v1, mask=mask)
    if C > 2:
        tl.store(ptr + o + 2, v2, mask=mask)
    if C > 3:
        tl.store(ptr + o + 3, v3, mask=mask)


@triton.jit
def _to_u8(v):
    """spec 10.4: clamp(floor(v*255 + 0.5), 0, 255) in float32, NaN -> 0; computed as
    trunc(clamp(v*255 + 0.5, 0, 255)), the same for every float (and no flush-to-zero
    floor instruction)."""
    t = v * 255.0 + 0.5
    t = tl.where(t > 0.0, t, 0.0)                       # NaN and negatives -> 0
    t = tl.where(t < 255.0, t, 255.0)
    return t.to(tl.int32).to(tl.uint8)


@_jit("n")
def _fast_exp_kernel(x, y, n, BLOCK: tl.constexpr):
    """y = fast_exp(x) elementwise (tests compare it with the C++ function bit for bit)."""
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    v = tl.load(x + o, mask=m, other=0.0)
    v = tl.where(v == v, v, 0.0)                        # NaN -> 0 (for the int cast inside)
    tl.store(y + o, _fast_exp(v), mask=m)


# ---- backward ------------------------------------------------------------------------------
# With v = w * sum_c(g_c * colour_c): dmean = sum(v * (a dx + b dy), v * (b dx + c dy)),
# da = -sum(v dx^2)/2, db = -sum(v dx dy), dc = -sum(v dy^2)/2, dcolour_c = sum(w g_c).
# MODE 0: added with relaxed atomics (order of float additions varies between runs);
# MODE 1: per-pair partial sums stored to `part` (row = the pair's slot in Gaussian order),
# summed in a fixed order by _reduce_kernel (deterministic); MODE 2: colours only, atomics
# (the adjoint of the colour solves).
# `part` rows: [dmx, dmy, da, db, dc, dcol_0 .. dcol_{C-1}].

@triton.jit
def _emit(dm, dq, dc, part, gid, row, f: tl.constexpr, val, mask,
          C: tl.constexpr, MODE: tl.constexpr):
    """Field f ([dmx, dmy, da, db, dc, dcol_0 ..]) of Gaussian gid: stored to row `row` of
    part (MODE 1) or added to the gradient with a relaxed atomic (MODE 0, 2)."""
    if MODE == 1:
        tl.store(part + (5 + C) * row + f, val, mask=mask)
    elif f < 2:
        tl.atomic_add(dm + 2 * gid + f, val, mask=mask, sem="relaxed")
    elif f < 5:
        tl.atomic_add(dq + 3 * gid + (f - 2), val, mask=mask, sem="relaxed")
    else:
        tl.atomic_add(dc + C * gid + (f - 5), val, mask=mask, sem="relaxed")


@_jit("W", "row0", "strip_h", "tiles_x")
def _bwd_tile_kernel(means, conics, colors, grad, dm, dq, dc, part, perm,
                     pair_gid, tile_start, W, row0, strip_h, tiles_x,
                     C: tl.constexpr, TILE_: tl.constexpr, BG: tl.constexpr,
                     MODE: tl.constexpr):
    """Per-tile backward over the tile's pairs in batches of BG."""
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
        gid = tl.load(pair_gid + idx, mask=gm, other=0).to(tl.int64)
        row = gid
        if MODE == 1:
            row = tl.load(perm + idx, mask=gm, other=0)
        mx = tl.load(means + 2 * gid, mask=gm, other=0.0)
        my = tl.load(means + 2 * gid + 1, mask=gm, other=0.0)
        a = tl.load(conics + 3 * gid, mask=gm, other=0.0)
        b = tl.load(conics + 3 * gid + 1, mask=gm, other=0.0)
        c = tl.load(conics + 3 * gid + 2, mask=gm, other=0.0)
        dx = pxf[None, :] - mx[:, None]
        dy = pyf[None, :] - my[:, None]
        w, keep = _weight(dx, dy, a[:, None], b[:, None], c[:, None])
        keep = keep & gm[:, None] & pmask[None, :]
        w = tl.where(keep, w, 0.0)
        _emit(dm, dq, dc, part, gid, row, 5, tl.sum(w * g0[None, :], axis=1), gm, C, MODE)
        if C > 1:
            _emit(dm, dq, dc, part, gid, row, 6, tl.sum(w * g1[None, :], axis=1), gm, C, MODE)
        if C > 2:
            _emit(dm, dq, dc, part, gid, row, 7, tl.sum(w * g2[None, :], axis=1), gm, C, MODE)
        if C > 3:
            _emit(dm, dq, dc, part, gid, row, 8, tl.sum(w * g3[None, :], axis=1), gm, C, MODE)
        if MODE != 2:
            gs = g0[None, :] * tl.load(colors + C * gid, mask=gm, other=0.0)[:, None]
            if C > 1:
                gs += g1[None, :] * tl.load(colors + C * gid + 1, mask=gm, other=0.0)[:, None]
            if C > 2:
                gs += g2[None, :] * tl.load(colors + C * gid + 2, mask=gm, other=0.0)[:, None]
            if C > 3:
                gs += g3[None, :] * tl.load(colors + C * gid + 3, mask=gm, other=0.0)[:, None]
            v = w * gs
            dxk = tl.where(keep, dx, 0.0)
            dyk = tl.where(keep, dy, 0.0)
            vx = v * dxk
            vy = v * dyk
            val = tl.sum(a[:, None] * vx + b[:, None] * vy, axis=1)
            _emit(dm, dq, dc, part, gid, row, 0, val, gm, C, MODE)
            val = tl.sum(b[:, None] * vx + c[:, None] * vy, axis=1)
            _emit(dm, dq, dc, part, gid, row, 1, val, gm, C, MODE)
            _emit(dm, dq, dc, part, gid, row, 2, -0.5 * tl.sum(vx * dxk, axis=1), gm, C, MODE)
            _emit(dm, dq, dc, part, gid, row, 3, -tl.sum(vx * dyk, axis=1), gm, C, MODE)
            _emit(dm, dq, dc, part, gid, row, 4, -0.5 * tl.sum(vy * dyk, axis=1), gm, C, MODE)


@_jit("W", "row0", "strip_h")
def _bwd_big_kernel(means, conics, colors, grad, dm, dq, dc, bigpart,
                    big_ids, n_big, rect, W, row0, strip_h,
                    C: tl.constexpr, TILE_: tl.constexpr, SPLIT: tl.constexpr,
                    MODE: tl.constexpr):
    """Backward of the big-list Gaussians: work item w = (Gaussian big_ids[w // SPLIT],
    part j = w % SPLIT) walks the tiles j, j + SPLIT, ... of its rectangle; the programs
    stride over the n_big * SPLIT items (the grid does not depend on n_big, so no host
    sync). MODE as in _bwd_tile_kernel (MODE 1: partials to bigpart row w)."""
    n_items = tl.load(n_big) * SPLIT
    p = tl.arange(0, TILE_ * TILE_)
    for w_ in range(tl.program_id(0), n_items, tl.num_programs(0)):
        j = w_ % SPLIT
        g = tl.load(big_ids + w_ // SPLIT).to(tl.int64)
        tx0 = tl.load(rect + 4 * g)
        nx = tl.load(rect + 4 * g + 1) - tx0 + 1
        ty0 = tl.load(rect + 4 * g + 2)
        cnt = nx * (tl.load(rect + 4 * g + 3) - ty0 + 1)
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
        for k in range(j, cnt, SPLIT):
            lx = (tx0 + k % nx) * TILE_ + p % TILE_
            ly = (ty0 + k // nx) * TILE_ + p // TILE_
            pmask = (lx < W) & (ly < strip_h)
            dx = (lx.to(tl.float32) + 0.5) - mx
            dy = ((ly + row0).to(tl.float32) + 0.5) - my
            w, keep = _weight(dx, dy, a, b, c)
            keep = keep & pmask
            w = tl.where(keep, w, 0.0)
            o = ((ly + row0).to(tl.int64) * W + lx) * C
            gr0 = tl.load(grad + o, mask=pmask, other=0.0)
            gs = gr0 * c0
            s_c0 += w * gr0
            if C > 1:
                gr1 = tl.load(grad + o + 1, mask=pmask, other=0.0)
                gs += gr1 * c1
                s_c1 += w * gr1
            if C > 2:
                gr2 = tl.load(grad + o + 2, mask=pmask, other=0.0)
                gs += gr2 * c2
                s_c2 += w * gr2
            if C > 3:
                gr3 = tl.load(grad + o + 3, mask=pmask, other=0.0)
                gs += gr3 * c3
                s_c3 += w * gr3
            if MODE != 2:
                v = w * gs
                dxk = tl.where(keep, dx, 0.0)
                dyk = tl.where(keep, dy, 0.0)
                s_mx += v * (a * dxk + b * dyk)
                s_my += v * (b * dxk + c * dyk)
                s_a += v * dxk * dxk
                s_b += v * dxk * dyk
                s_c += v * dyk * dyk
        w64 = tl.cast(w_, tl.int64)
        _emit(dm, dq, dc, bigpart, g, w64, 5, tl.sum(s_c0, axis=0), None, C, MODE)
        if C > 1:
            _emit(dm, dq, dc, bigpart, g, w64, 6, tl.sum(s_c1, axis=0), None, C, MODE)
        if C > 2:
            _emit(dm, dq, dc, bigpart, g, w64, 7, tl.sum(s_c2, axis=0), None, C, MODE)
        if C > 3:
            _emit(dm, dq, dc, bigpart, g, w64, 8, tl.sum(s_c3, axis=0), None, C, MODE)
        if MODE != 2:
            _emit(dm, dq, dc, bigpart, g, w64, 0, tl.sum(s_mx, axis=0), None, C, MODE)
            _emit(dm, dq, dc, bigpart, g, w64, 1, tl.sum(s_my, axis=0), None, C, MODE)
            _emit(dm, dq, dc, bigpart, g, w64, 2, -0.5 * tl.sum(s_a, axis=0), None, C, MODE)
            _emit(dm, dq, dc, bigpart, g, w64, 3, -tl.sum(s_b, axis=0), None, C, MODE)
            _emit(dm, dq, dc, bigpart, g, w64, 4, -0.5 * tl.sum(s_c, axis=0), None, C, MODE)


@_jit("n", "max_pairs")
def _reduce_kernel(part, bigpart, cum, big_pos, dm, dq, dc, n, max_pairs,
                   C: tl.constexpr, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """Deterministic backward: Gaussian g's gradient += the partial sums of its pairs in
    slot order (its slots are [end[g] - pairs[g], end[g]) of cum[:, 0]), then those of its
    SPLIT big-list parts in order. One row per Gaussian, one column per field."""
    F: tl.constexpr = 5 + C
    FP: tl.constexpr = 8 if C < 4 else 16
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    f = tl.arange(0, FP)[None, :]
    live = g < n
    end = tl.load(cum + 3 * g, mask=live, other=0)
    first = tl.load(cum + 3 * (g - 1), mask=live & (g > 0), other=0)
    first = tl.where(end <= max_pairs, first, end)      # past the capacity: in the big list
    bp = tl.load(big_pos + g, mask=live, other=-1).to(tl.int64)
    acc = tl.zeros([BLOCK, FP], dtype=tl.float32)
    k = first
    while tl.max((k < end).to(tl.int32), axis=0) > 0:
        acc += tl.load(part + F * k[:, None] + f, mask=(k < end)[:, None] & (f < F), other=0.0)
        k += 1
    big = (live & (bp >= 0))[:, None] & (f < F)
    for j in range(SPLIT):
        acc += tl.load(bigpart + F * (bp * SPLIT + j)[:, None] + f, mask=big, other=0.0)
    g2 = g[:, None]
    ptr = tl.where(f < 2, dm + 2 * g2 + f, tl.where(f < 5, dq + 3 * g2 + (f - 2),
                                                    dc + C * g2 + (f - 5)))
    m = live[:, None] & (f < F)
    tl.store(ptr, tl.load(ptr, mask=m, other=0.0) + acc, mask=m)
