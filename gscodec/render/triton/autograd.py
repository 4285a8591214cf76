"""The drivers of the Triton kernels: the differentiable render (an autograd Function), the
colour operator of the colour solves, and the exact strip render of the decoder.

One render = per strip (common.strips) the five binning launches (binning.py) and one
raster launch: 6 at 768x512. Backward: one zeroed gradient buffer, then per strip the tile
kernel and the big-list kernel (deterministic: and the reduction), on kept binning.
"""
from __future__ import annotations

import torch

from ..common import STRIP_ROWS, strips
from . import kernels as K
from .binning import MAX_TILES_PER_GAUSSIAN, bin_gaussians, exact_chunks

BIG_PROGRAMS = 1024              # programs striding over the big list (GPU)
BIG_PROGRAMS_INTERPRET = 2       # (interpreter: each program costs the same, idle or not)
KEEP_BINS_STRIPS = 4             # keep the forward's binning for backward up to this many

_DUMMY: dict = {}


def check_device(t: torch.Tensor) -> None:
    """The kernels run on CUDA tensors, or under the interpreter on CPU tensors."""
    want = "cpu" if K.INTERPRETED else "cuda"
    if t.device.type == want:
        return
    if t.device.type == "cpu":
        raise RuntimeError("render backend 'triton' got CPU tensors; these run only under "
                           "Triton's interpreter (TRITON_INTERPRET=1 before triton is "
                           "imported)")
    raise ValueError(f"render backend 'triton' cannot run on device {t.device} "
                     f"(kernels {'interpreted' if K.INTERPRETED else 'compiled'})")


def _dummy(dev, dtype=torch.float32):
    """A one-element buffer for a pointer argument a kernel variant does not touch."""
    key = (str(dev), dtype)
    if key not in _DUMMY:
        _DUMMY[key] = torch.empty(1, dtype=dtype, device=dev)
    return _DUMMY[key]


def _batch(backward: bool = False) -> int:
    return K.BATCH_INTERPRET if K.INTERPRETED else (K.BATCH_BWD if backward else K.BATCH)


# ---- forward ------------------------------------------------------------------------------

def raster(m, q, c, out, bn, row0: int, strip_h: int, width: int):
    """Normal forward of one binned strip into out (the whole image [H, W, C])."""
    K.launch(K._fwd_kernel, (bn.tiles_x * bn.tiles_y,), m, q, c, out, bn.pair_gid,
             bn.tile_start, bn.big_ids, bn.n_big, bn.rect, width, row0, strip_h, bn.tiles_x,
             C=c.shape[1], TILE_=K.TILE, BG=_batch())


def exact_strip(m, q, c, out, out_u8, row0: int, strip_h: int, width: int,
                shift=(0.0, 0.0)) -> None:
    """spec 10 for rows [row0, row0 + strip_h) of the means moved by -shift (float32):
    float32 sums into `out` or, if out_u8 is given, the 8-bit pixels into out_u8 (then
    `out` is only used when the Gaussians come in several chunks)."""
    C = c.shape[1]
    chunks = exact_chunks(m, q, row0, strip_h, width, shift)
    cur, first = next(chunks, None), True
    if cur is None:                                    # nothing drawn in this strip
        (out_u8 if out_u8 is not None else out)[row0:row0 + strip_h].zero_()
        return
    while cur is not None:
        nxt = next(chunks, None)
        to_u8 = out_u8 is not None and nxt is None
        if out is None:
            out = _dummy(m.device) if first and to_u8 else torch.empty(
                (row0 + strip_h, width, C), dtype=torch.float32, device=m.device)
        K.launch(K._fwd_exact_kernel, (cur.tiles_x * cur.tiles_y,), m, q, c, cur.rows, out,
                 out_u8 if out_u8 is not None else _dummy(m.device, torch.uint8),
                 cur.pair_gid, cur.tile_start, float(shift[0]), float(shift[1]), width, row0,
                 strip_h, cur.tiles_x, int(not first), int(to_u8), C=C, TILE_=K.TILE)
        cur, first = nxt, False


def forward(m, q, c, height, width, opts, keep_bins):
    out = torch.empty(height, width, c.shape[1], dtype=torch.float32, device=m.device)
    bins = []
    for row0, sh in strips(height, opts["strip_rows"]):
        if opts["exact"]:
            exact_strip(m, q, c, out, None, row0, sh, width)
            bins.append((row0, sh, None))     # backward bins again, the normal way
            continue
        bn = bin_gaussians(m, q, row0, sh, width, pair_capacity=opts["pair_capacity"],
                           max_tiles=opts["max_tiles"])
        raster(m, q, c, out, bn, row0, sh, width)
        bins.append((row0, sh, bn if keep_bins else None))
    return out, bins


# ---- backward -----------------------------------------------------------------------------

def _grad_buffers(n: int, C: int, dev):
    """Zeroed contiguous gradients of means, conics and colours, one allocation."""
    buf = torch.zeros(n * (5 + C), dtype=torch.float32, device=dev)
    return buf[:2 * n].view(n, 2), buf[2 * n:5 * n].view(n, 3), buf[5 * n:].view(n, C)


def backward_strip(m, q, c, grad, gm, gq, gc, bn, row0, strip_h, width, mode: int):
    """One binned strip's gradients: mode 0 atomics, 1 deterministic, 2 colours only."""
    n, C = c.shape
    dev = m.device
    F = 5 + C
    part = torch.empty(bn.capacity * F, dtype=torch.float32, device=dev) if mode == 1 \
        else _dummy(dev)
    bigpart = torch.empty(max(n, 1) * K.SPLIT * F, dtype=torch.float32, device=dev) \
        if mode == 1 else _dummy(dev)
    K.launch(K._bwd_tile_kernel, (bn.tiles_x * bn.tiles_y,), m, q, c, grad, gm, gq, gc, part,
             bn.perm, bn.pair_gid, bn.tile_start, width, row0, strip_h, bn.tiles_x,
             C=C, TILE_=K.TILE, BG=_batch(backward=True), MODE=mode)
    programs = BIG_PROGRAMS_INTERPRET if K.INTERPRETED else BIG_PROGRAMS
    K.launch(K._bwd_big_kernel, (max(1, min(n * K.SPLIT, programs)),), m, q, c, grad, gm, gq,
             gc, bigpart, bn.big_ids, bn.n_big, bn.rect, width, row0, strip_h,
             C=C, TILE_=K.TILE, SPLIT=K.SPLIT, MODE=mode)
    if mode == 1:
        K.launch(K._reduce_kernel, (max(1, -(-n // 128)),), part, bigpart, bn.cum,
                 bn.big_pos, gm, gq, gc, n, bn.capacity, C=C, SPLIT=K.SPLIT, BLOCK=128)


def backward(m, q, c, grad, height, width, opts, bins, deterministic):
    n, C = c.shape
    gm, gq, gc = _grad_buffers(n, C, m.device)
    for row0, sh, bn in bins:
        if bn is None:
            bn = bin_gaussians(m, q, row0, sh, width, pair_capacity=opts["pair_capacity"],
                               max_tiles=opts["max_tiles"])
        backward_strip(m, q, c, grad, gm, gq, gc, bn, row0, sh, width,
                       1 if deterministic else 0)
    return gm, gq, gc


class RenderTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, height, width, deterministic, opts):
        m = means.detach().to(torch.float32).contiguous()
        q = conics.detach().to(torch.float32).contiguous()
        c = colors.detach().to(torch.float32).contiguous()
        n, C = c.shape
        n_strips = -(-height // opts["strip_rows"])
        if n == 0 or height == 0 or width == 0:
            out, bins = torch.zeros(height, width, C, dtype=torch.float32, device=m.device), []
        else:
            keep = not opts["exact"] and n_strips <= KEEP_BINS_STRIPS \
                and any(ctx.needs_input_grad[:3])
            out, bins = forward(m, q, c, height, width, opts, keep)
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
            gm, gq, gc = backward(m, q, c, grad, height, width, opts, ctx.bins, deterministic)
        ctx.bins = None
        return (gm.to(dts[0]) if ctx.needs_input_grad[0] else None,
                gq.to(dts[1]) if ctx.needs_input_grad[1] else None,
                gc.to(dts[2]) if ctx.needs_input_grad[2] else None, None, None, None, None)


def render_opts(strip_rows=STRIP_ROWS, pair_capacity=None, max_tiles=MAX_TILES_PER_GAUSSIAN,
                exact=False) -> dict:
    return {"strip_rows": max(1, int(strip_rows)), "pair_capacity": pair_capacity,
            "max_tiles": int(max_tiles), "exact": bool(exact)}


class ColorOperator:
    """Colours -> image of fixed geometry (forward: one raster launch per strip) and its
    adjoint (the backward's colour part only: two launches per strip), on binning made once
    for all the passes of a colour solve."""

    def __init__(self, means, conics, height: int, width: int):
        self.m = means.detach().to(torch.float32).contiguous()
        self.q = conics.detach().to(torch.float32).contiguous()
        check_device(self.m)
        self.size = (int(height), int(width))
        n = self.m.shape[0]
        self.bins = [] if n == 0 or 0 in self.size else \
            [(row0, sh, bin_gaussians(self.m, self.q, row0, sh, self.size[1]))
             for row0, sh in strips(self.size[0])]

    def forward(self, colors):
        c = colors.detach().to(torch.float32).contiguous()
        h, w = self.size
        if not self.bins:
            return torch.zeros(h, w, c.shape[1], dtype=torch.float32, device=self.m.device)
        out = torch.empty(h, w, c.shape[1], dtype=torch.float32, device=self.m.device)
        for row0, sh, bn in self.bins:
            raster(self.m, self.q, c, out, bn, row0, sh, w)
        return out

    def adjoint(self, v):
        g = v.detach().to(torch.float32).contiguous()
        n, C = self.m.shape[0], g.shape[-1]
        gc = torch.zeros(n, C, dtype=torch.float32, device=self.m.device)
        for row0, sh, bn in self.bins:
            backward_strip(self.m, self.q, gc, g, gc, gc, gc, bn, row0, sh, self.size[1], 2)
        return gc
