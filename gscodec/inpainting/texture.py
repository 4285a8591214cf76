"""Texture for large holes (`inpaint(..., texture=True)`): exemplar detail from the known
part of the image laid over the smooth Gaussian fill.

The smooth fill (the local lattice fit, `lattice.py`) carries the structure: colours and
edges continued from the border, smooth at the seams. What it lacks is the fine detail
(grass, foliage, fabric). That detail is taken from the known part of the image:
- detail layer D = image - its Gaussian blur (DETAIL_SIGMA), by normalised convolution over
  the known pixels;
- the hole is covered by PATCH x PATCH target patches on a grid of step PATCH / 2, taken in
  onion order (bands by distance to the border); each is matched, on the 2x-pooled current
  estimate (known and already textured pixels at weight 1, the smooth fill at HOLE_WEIGHT)
  plus a mild distance penalty, against every source patch on a grid inside the known part
  (a masked sum of squared differences, three matrix products);
- each target adds its best source's detail under a window that is flat over the middle
  half and ramps where neighbours overlap (the windows of the grid sum to one);
- the result is the smooth fill plus that detail, in the hole only.

Only known pixels and the smooth fill are read (never the pixels under the mask), and there
is no random choice: the output is deterministic. It scores below the smooth fill on PSNR,
SSIMULACRA2 and FLIP, hence opt-in: docs/experiments.md, Inpainting, "Texture option".
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 16             # target / source patch side (pixels); the grid step is PATCH // 2
DETAIL_SIGMA = 10.0    # the detail layer is what a blur of this sigma (pixels) removes
HOLE_WEIGHT = 0.3      # weight of smooth-fill pixels against known ones in the matching
DIST_PENALTY = 0.02    # matching cost added per (source distance / image diagonal)^2
MAX_SOURCES = 8000     # the source grid is thinned to at most this many patches
CHUNK = 256            # targets matched at once


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [C,H,W] (zero outside the image)."""
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(y, k.view(1, 1, -1, 1), padding=(r, 0))[:, 0][:c]


def _detail(img: torch.Tensor, known: torch.Tensor):
    """Detail layer of img [C,H,W] over known [H,W] (normalised convolution), zero in the
    hole, and the map of the pixels where it is defined."""
    kb = _blur(known[None], DETAIL_SIGMA)[0]
    low = _blur(img * known, DETAIL_SIGMA) / kb.clamp(min=1e-6)
    # The normalised blur is defined wherever a known pixel is (near the hole it averages
    # the known side only); requiring its whole support known left no sources in narrow
    # known strips between strokes.
    valid = known > 0.5
    return (img - low) * valid, valid


def _distance(hole: torch.Tensor) -> torch.Tensor:
    """Chessboard distance of each cell of hole [H,W] (0/1) to the nearest other cell."""
    dist = torch.zeros_like(hole)
    cur = hole.clone()
    while bool(cur.any()):
        dist += cur
        cur = 1.0 - F.max_pool2d((1.0 - cur)[None, None], 3, stride=1, padding=1)[0, 0]
    return dist


def add_texture(image: np.ndarray, missing: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """image, smooth: HxWxC uint8 (smooth: the smooth fill in the hole, the known pixels
    elsewhere); missing: HxW bool. Returns smooth with exemplar detail added in the hole."""
    h, w, c = image.shape
    p, st = PATCH, PATCH // 2
    if min(h, w) < 2 * p:
        return smooth
    hole = torch.from_numpy(np.ascontiguousarray(missing))
    known = (~hole).float()
    img = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1) * known
    cur = torch.from_numpy(smooth.astype(np.float32) / 255.0).permute(2, 0, 1)
    detail, valid = _detail(img, known)
    # Pad to whole grid cells plus one step on each side, so the tent windows cover the image.
    ph = (-(h + 2 * st)) % st
    pw = (-(w + 2 * st)) % st
    pad = (st, st + pw, st, st + ph)
    cur_p = F.pad(cur, pad, mode="replicate")
    known_p = F.pad(known, pad)
    hole_p = F.pad(hole.float(), pad)
    det_p = F.pad(detail, pad)
    valid_p = F.pad(valid.float(), pad)
    hp, wp = cur_p.shape[1:]
    q = p // 2
    gx = (wp - p) // st + 1
    tgt_hole = F.unfold(hole_p[None, None], p, stride=st)[0].amax(0) > 0.5
    targets = torch.nonzero(tgt_hole).flatten()
    # Sources: patches whose detail is fully valid, on a grid thinned to MAX_SOURCES.
    ok = F.unfold(valid_p[None, None], p, stride=2)[0].amin(0) > 0.5
    src = torch.nonzero(ok).flatten()
    if targets.numel() == 0 or src.numel() == 0:
        return smooth
    if src.numel() > MAX_SOURCES:
        src = src[torch.linspace(0, src.numel() - 1, MAX_SOURCES).round().long()]
    sx_n = (wp - p) // 2 + 1
    s_y, s_x = (src // sx_n) * 2, (src % sx_n) * 2                        # padded pixels
    # Source features: 2x-pooled patches (PATCH/2 square) of the known image.
    sfe = F.unfold(F.avg_pool2d(cur_p[None], 2), q, stride=1)[0]          # [C*q*q, all]
    sf = sfe[:, (s_y // 2) * (wp // 2 - q + 1) + s_x // 2].T.contiguous()  # [S, C*q*q]
    del sfe
    sf2 = (sf * sf).T.contiguous()
    t_y, t_x = (targets // gx) * st, (targets % gx) * st
    # Onion order: targets by the distance of their centre to the known part, in bands of
    # one grid step; each band is matched against the estimate that holds the detail laid
    # by the bands before it (weight 1, like known pixels), so the texture grows coherently.
    cells = F.avg_pool2d(hole_p[None, None], st)[0, 0] > 0.999      # wholly-hole cells
    band = _distance(cells.float())[t_y // st + 1, t_x // st + 1].long()
    # Window: 1 over the patch's middle half, ramps of PATCH/4 pixels where neighbours
    # overlap (the windows of the grid sum to one; a tent averaged two sources over the
    # whole patch and left a ghost of both).
    a = ((torch.arange(p).float() + 0.5) - st / 4) / (st / 2)
    ramp = a.clamp(0, 1)
    edge = torch.where(torch.arange(p) < st, ramp, 1.0 - ramp.roll(st))
    win = (edge[:, None] * edge[None, :]).flatten()                       # [p*p]
    oy, ox = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    oy, ox = oy.flatten(), ox.flatten()
    add = torch.zeros(c, hp, wp)
    done = known_p.clone()
    diag2 = float(h * h + w * w)
    for b in torch.unique(band).tolist():
        sel = torch.nonzero(band == b).flatten()
        est = cur_p + add * hole_p
        feat = F.avg_pool2d(est[None], 2)[0]
        wmap = F.avg_pool2d((done + HOLE_WEIGHT * (1 - done))[None, None], 2)[0, 0]
        tf = F.unfold(feat[None], q, stride=st // 2)[0].T[targets[sel]]
        tw = F.unfold(wmap[None, None], q, stride=st // 2)[0].T[targets[sel]].repeat(1, c)
        best = torch.empty(sel.numel(), dtype=torch.long)
        for k in range(0, sel.numel(), CHUNK):          # bounded memory: CHUNK x sources
            ks = slice(k, k + CHUNK)
            twt = tw[ks]
            cost = (twt @ sf2 - 2.0 * ((tf[ks] * twt) @ sf.T)) / twt.sum(1, keepdim=True)
            dy = (t_y[sel[ks], None] - s_y[None]).float()
            dx = (t_x[sel[ks], None] - s_x[None]).float()
            best[ks] = torch.argmin(cost + DIST_PENALTY * (dy * dy + dx * dx) / diag2, 1)
        # Each target's source detail under the tent window, added in place.
        iy = (s_y[best][:, None] + oy[None]).flatten()
        ix = (s_x[best][:, None] + ox[None]).flatten()
        ty = (t_y[sel][:, None] + oy[None]).flatten()
        tx = (t_x[sel][:, None] + ox[None]).flatten()
        flat = ty * wp + tx
        wv = win.repeat(sel.numel())
        add.view(c, -1).index_add_(1, flat, det_p[:, iy, ix] * wv)
        done.view(-1).index_fill_(0, flat, 1.0)
    add = add[:, st:st + h, st:st + w]
    out = cur + add * hole.float()
    res = np.clip(np.rint(out.permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)
    res[~missing] = smooth[~missing]
    return res
