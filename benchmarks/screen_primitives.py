"""Primitive screen (issue 33): fit small crops with several primitive kinds at equal count.

Dense torch renderer (every Gaussian at every pixel, cut at q <= 12), Adam as gscodec's free fit
(lr x4, beta2 0.9, cosine to 5 %), least-squares colours every 50 steps, error-guided
refinement at 10..60 %. Float PSNR at equal primitive count; bits are weighed afterwards
(screen_primitives_bits.py). Crops are NAME:X:Y:SIZE, NAME a Kodak image (kodimNN), a photo
(wikiNNN, ../shared/datasets/photos), `stripes` (synthetic) or a scikit-image picture. Kinds:
gauss, gabor (gabor0 without a phase, gabor2 an amplitude per channel), gexp, edge, norm, and
base<S> (Gaussians plus a coarse base layer: a bilinear grid with a node every S pixels, its
values solved with the colours). Results and the commands: docs/experiments.md, Primitives
(issue 33).

    python benchmarks/screen_primitives.py --crops grass:100:100:128,page:120:30:128 \
        --kinds gauss,gabor --n 320 --iters 600 --out /tmp/s.json
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
Q_CUT = 12.0


def load_crop(spec):
    name, x, y, s = spec.split(":")
    x, y, s = int(x), int(y), int(s)
    if name.startswith("kodim") or name.startswith("wiki"):
        from PIL import Image
        shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
        root = f"{shared / ('kodak' if name.startswith('kodim') else 'photos')}/"
        im = np.asarray(Image.open(root + name + ".png").convert("RGB"))
    elif name == "stripes":
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        a = 0.35
        f = 2 * np.pi / 5.3
        v = 0.5 + 0.35 * np.cos(f * (np.cos(a) * xx + np.sin(a) * yy)) * (xx < s * 0.7) \
            + 0.1 * np.cos(2 * np.pi / 9.1 * (np.cos(1.9) * xx + np.sin(1.9) * yy)) * (yy > s * 0.3)
        im = np.clip(v * 255, 0, 255).astype(np.uint8)
    else:
        import skimage.data as d
        im = getattr(d, name)()
        if im.ndim == 3 and im.shape[2] == 4:
            a = im[..., 3:4].astype(np.float32) / 255
            im = (im[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    im = im[y:y + s, x:x + s]
    if im.ndim == 2:
        im = im[..., None]
    return torch.from_numpy(im.astype(np.float32) / 255.0)


class Prims:
    def __init__(self, kind, xy, ls, th, col):
        self.kind = kind
        n = xy.shape[0]
        self.t = {"xy": xy, "ls": ls, "th": th, "col": col}
        if kind == "gabor0":
            g = torch.Generator().manual_seed(1)
            self.t["amp"] = torch.zeros(n)
            self.t["freq"] = 0.6 + 2.4 * torch.rand(n, generator=g)
        elif kind == "gabor":
            g = torch.Generator().manual_seed(1)
            self.t["amp"] = torch.zeros(n)
            self.t["freq"] = 0.6 + 2.4 * torch.rand(n, generator=g)   # radians per sigma
            self.t["phase"] = 2 * math.pi * torch.rand(n, generator=g)
        elif kind == "gabor2":   # amplitude per channel
            g = torch.Generator().manual_seed(1)
            self.t["amp"] = torch.zeros(n, col.shape[1])
            self.t["freq"] = 0.6 + 2.4 * torch.rand(n, generator=g)
            self.t["phase"] = 2 * math.pi * torch.rand(n, generator=g)
        elif kind == "gexp":
            self.t["beta"] = torch.zeros(n)       # exponent = exp2(beta)
        elif kind == "edge":
            self.t["k"] = torch.zeros(n)
            self.t["b"] = torch.zeros(n)
        elif kind == "norm":
            self.t["eps"] = torch.zeros(1)       # global, log
        elif kind.startswith("base"):            # base<S>: a bilinear grid, a node every S px
            self.t["base"] = torch.zeros(1)      # sized by the first colour solve
        for v in self.t.values():
            v.requires_grad_(True)

    def select(self, keep):
        p = Prims.__new__(Prims)
        p.kind = self.kind
        p.t = {k: (v.detach()[keep].clone() if k not in GLOBAL else v.detach().clone())
               .requires_grad_(True)
               for k, v in self.t.items()}
        return p

    def cat(self, new):
        p = Prims.__new__(Prims)
        p.kind = self.kind
        p.t = {}
        for k, v in self.t.items():
            if k in GLOBAL:
                p.t[k] = v.detach().clone().requires_grad_(True)
            else:
                p.t[k] = torch.cat([v.detach(), new[k]]).requires_grad_(True)
        return p

    @property
    def n(self):
        return self.t["xy"].shape[0]



BUCKETS = (7, 15, 31, 63, 127, 255)
GLOBAL = ("eps", "base")     # parameters of the whole crop, not of one primitive


def base_step(kind):
    return int(kind[4:] or 16)


@functools.lru_cache(maxsize=None)
def base_hats(h, w, step):
    """[P, G] bilinear interpolation weights of the base grid's nodes (a node every `step`
    pixels, from pixel centre 0 to past the far edge); cached: every render needs them."""
    gh, gw = h // step + 2, w // step + 2
    def hat(n, g):
        x = (torch.arange(n, dtype=torch.float32) + 0.5) / step
        return (1 - (x[:, None] - torch.arange(g, dtype=torch.float32)[None]).abs()).clamp(min=0)
    return (hat(h, gh)[:, None, :, None] * hat(w, gw)[None, :, None, :]).reshape(h * w, gh * gw)


def _local(p, sl, pix_unused, h, w, K):
    """(u, v, q, flat pixel index, valid) on a K x K window around each primitive of sl."""
    t = p.t
    xy, ls, th = t["xy"][sl], t["ls"][sl], t["th"][sl]
    r = K // 2
    off = torch.arange(-r, r + 1, dtype=torch.float32)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    cx = torch.floor(xy[:, 0:1].detach())
    cy = torch.floor(xy[:, 1:2].detach())
    px = cx + ox.flatten()[None] + 0.5
    py = cy + oy.flatten()[None] + 0.5
    valid = (px > 0) & (px < w) & (py > 0) & (py < h)
    idx = ((py - 0.5).clamp(0, h - 1) * w + (px - 0.5).clamp(0, w - 1)).long()
    dx = px - xy[:, 0:1]
    dy = py - xy[:, 1:2]
    c, si = torch.cos(th)[:, None], torch.sin(th)[:, None]
    u = (dx * c + dy * si) * torch.exp2(-ls[:, 0:1])
    v = (-dx * si + dy * c) * torch.exp2(-ls[:, 1:2])
    q = u * u + v * v
    return u, v, q, idx, valid


def _weights(p, sl, u, v, q, valid):
    t = p.t
    if p.kind == "gexp":
        beta = torch.exp2(t["beta"][sl])[:, None].clamp(0.25, 4.0)
        w = torch.exp(-0.5 * (q + 1e-12) ** beta)
    else:
        w = torch.exp(-0.5 * q)
    if p.kind == "gabor":
        w = w * (1 + t["amp"][sl, None] * torch.cos(t["freq"][sl, None] * u + t["phase"][sl, None]))
    elif p.kind == "gabor0":
        w = w * (1 + t["amp"][sl, None] * torch.cos(t["freq"][sl, None] * u))
    elif p.kind == "edge":
        w = w * 2 * torch.sigmoid(t["k"][sl, None] * v + t["b"][sl, None])
    return w * ((q <= Q_CUT) & valid).float()


def groups(p, h, w):
    with torch.no_grad():
        r = math.sqrt(Q_CUT) * torch.exp2(p.t["ls"].detach().max(1).values) + 2
        need = 2 * torch.ceil(r) + 1
        out = []
        big = max(h, w) * 2 + 1
        prev = 0
        for K in BUCKETS + (big,):
            sel = torch.nonzero((need <= K) & (need > prev)).flatten()
            if K == big:
                sel = torch.nonzero(need > prev).flatten()
            if sel.numel():
                out.append((K if K != big else (big | 1), sel))
            prev = K
            if K == big:
                break
        return out


def render_parts(p, h, w, want_osc=False):
    """img [P, C] (sum of colour * weight) and den [P] (sum of weights)."""
    C = p.t["col"].shape[1]
    P = h * w
    img = torch.zeros(P, C)
    den = torch.zeros(P)
    for K, sel in groups(p, h, w):
        u, v, q, idx, valid = _local(p, sel, None, h, w, K)
        wt = _weights(p, sel, u, v, q, valid)
        col = p.t["col"][sel]
        if p.kind == "gabor2":
            osc = wt * torch.cos(p.t["freq"][sel, None] * u + p.t["phase"][sel, None])
            contrib = (wt[..., None] * col[:, None, :]
                       + osc[..., None] * (col * p.t["amp"][sel])[:, None, :])
        else:
            contrib = wt[..., None] * col[:, None, :]
        img = img.index_add(0, idx.flatten(), contrib.reshape(-1, C))
        if p.kind == "norm":
            den = den.index_add(0, idx.flatten(), wt.flatten())
    if p.kind.startswith("base"):
        img = img + base_hats(h, w, base_step(p.kind)) @ p.t["base"]
    return img, den


def basis_dense(p, h, w):
    """Dense basis A [P, N] (for least squares)."""
    with torch.no_grad():
        A = torch.zeros(h * w, p.n)
        for K, sel in groups(p, h, w):
            u, v, q, idx, valid = _local(p, sel, None, h, w, K)
            wt = _weights(p, sel, u, v, q, valid)
            cols = sel[:, None].expand_as(idx)
            A.index_put_((idx.flatten(), cols.flatten()), wt.flatten(), accumulate=True)
        return A


def basis(p: Prims, pix, chunk=64):
    """Weights [N, P] of every primitive at every pixel (before colours) and, for 'norm',
    the normalisation is applied in render."""
    t = p.t
    out = []
    for s in range(0, p.n, chunk):
        sl = slice(s, s + chunk)
        xy, ls, th = t["xy"][sl], t["ls"][sl], t["th"][sl]
        d = pix[None, :, :] - xy[:, None, :]
        c, si = torch.cos(th)[:, None], torch.sin(th)[:, None]
        u = (d[..., 0] * c + d[..., 1] * si) * torch.exp2(-ls[:, 0:1])
        v = (-d[..., 0] * si + d[..., 1] * c) * torch.exp2(-ls[:, 1:2])
        q = u * u + v * v
        inside = (q <= Q_CUT).float()
        if p.kind == "gexp":
            beta = torch.exp2(t["beta"][sl])[:, None].clamp(0.25, 4.0)
            w = torch.exp(-0.5 * (q + 1e-12) ** beta)
        else:
            w = torch.exp(-0.5 * q)
        if p.kind == "gabor":
            w = w * (1 + t["amp"][sl, None]
                     * torch.cos(t["freq"][sl, None] * u + t["phase"][sl, None]))
        elif p.kind == "edge":
            w = w * 2 * torch.sigmoid(t["k"][sl, None] * v + t["b"][sl, None])
        out.append(w * inside)
    return torch.cat(out)


def render(p: Prims, pix, h, w):
    C = p.t["col"].shape[1]
    img, den = render_parts(p, h, w)
    if p.kind == "norm":
        e = torch.exp(p.t["eps"])
        img = img / (den[:, None] + e) * (1 + e)
    return img.reshape(h, w, C)


def render_dense(p: Prims, pix, h, w):
    C = p.t["col"].shape[1]
    if p.kind == "gabor2":
        B = basis_g2(p, pix)       # [N, P], [N, P] (envelope, oscillation)
        env, osc = B
        img = env.t() @ p.t["col"] + osc.t() @ (p.t["col"] * p.t["amp"])
        return img.reshape(h, w, C)
    B = basis(p, pix)
    img = B.t() @ p.t["col"]
    if p.kind == "norm":
        den = B.sum(0)[:, None] + torch.exp(p.t["eps"])
        img = img / den * (1 + torch.exp(p.t["eps"]))
    return img.reshape(h, w, C)


def basis_g2(p, pix, chunk=64):
    t = p.t
    envs, oscs = [], []
    for s in range(0, p.n, chunk):
        sl = slice(s, s + chunk)
        xy, ls, th = t["xy"][sl], t["ls"][sl], t["th"][sl]
        d = pix[None, :, :] - xy[:, None, :]
        c, si = torch.cos(th)[:, None], torch.sin(th)[:, None]
        u = (d[..., 0] * c + d[..., 1] * si) * torch.exp2(-ls[:, 0:1])
        v = (-d[..., 0] * si + d[..., 1] * c) * torch.exp2(-ls[:, 1:2])
        q = u * u + v * v
        w = torch.exp(-0.5 * q) * (q <= Q_CUT).float()
        envs.append(w)
        oscs.append(w * torch.cos(t["freq"][sl, None] * u + t["phase"][sl, None]))
    return torch.cat(envs), torch.cat(oscs)


def solve_colors(p, pix, target, h, w):
    """Exact least squares colours for the current geometry (linear in colours)."""
    with torch.no_grad():
        C = target.shape[2]
        y = target.reshape(-1, C)
        if p.kind == "gabor2":
            return  # amplitudes couple with colours; leave to Adam
        B = basis_dense(p, h, w).t()
        if p.kind == "norm":
            den = B.sum(0)[None, :] + torch.exp(p.t["eps"])
            B = B / den * (1 + torch.exp(p.t["eps"]))
        A = B.t()
        if p.kind.startswith("base"):     # the grid is solved with the colours
            A = torch.cat([A, base_hats(h, w, base_step(p.kind))], 1)
        A = A.double()
        sol = torch.linalg.lstsq(A.t() @ A + 1e-6 * torch.eye(A.shape[1], dtype=torch.float64),
                                 A.t() @ y.double()).solution.float()
        p.t["col"].data.copy_(sol[:p.n].clamp(-2, 3))
        if p.kind.startswith("base"):
            p.t["base"] = sol[p.n:].clone().requires_grad_(True)


LR = {"xy": 0.15, "ls": 0.02, "th": 0.03, "col": 0.006, "amp": 0.01, "freq": 0.01, "phase": 0.03,
      "beta": 0.01, "k": 0.03, "b": 0.02, "eps": 0.01, "base": 0.006}


def adam(p, boost=4.0):
    return torch.optim.Adam([{"params": [v], "lr": LR[k] * boost, "name": k}
                             for k, v in p.t.items()],
                            betas=(0.9, 0.9), eps=1e-12)


def init(kind, target, n, seed):
    h, w, C = target.shape
    g = torch.Generator().manual_seed(seed)
    lum = target.mean(-1)
    gy = torch.zeros_like(lum)
    gx = torch.zeros_like(lum)
    gy[1:-1] = (lum[2:] - lum[:-2]) / 2
    gx[:, 1:-1] = (lum[:, 2:] - lum[:, :-2]) / 2
    gm = (gx * gx + gy * gy).flatten()
    prob = 0.7 * gm / gm.sum().clamp(min=1e-12) + 0.3 / gm.numel()
    idx = torch.multinomial(prob, n, replacement=False, generator=g)
    xy = torch.stack([(idx % w).float(), (idx // w).float()], -1) + torch.rand(n, 2, generator=g)
    sig = 0.6 * math.sqrt(h * w / n)
    ls = torch.full((n, 2), math.log2(sig)) + 0.1 * torch.randn(n, 2, generator=g)
    th = math.pi * torch.rand(n, generator=g)
    col = torch.zeros(n, C)
    return Prims(kind, xy, ls, th, col)


def psnr(img, target):
    mse = float(((img.clamp(0, 1) * 255).round() / 255 - target).pow(2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def fit(kind, target, n, iters, seed=0, log=False):
    h, w, C = target.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                            torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    pix = torch.stack([xx.flatten(), yy.flatten()], -1)
    g = torch.Generator().manual_seed(seed + 7)
    p = init(kind, target, int(round(n * 1.5)), seed)
    solve_colors(p, pix, target, h, w)
    opt = adam(p)
    refine = sorted({int(f * iters) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)})
    t0 = time.perf_counter()
    for it in range(iters):
        if it in refine:
            left = len(refine) - refine.index(it)
            with torch.no_grad():
                img = render(p, pix, h, w)
                resid = target - img
                # removal cost ~ |c|^2 area + 2 <c g, r>, approximated by |c|^2 * area
                area = torch.exp2(p.t["ls"].detach().sum(1))
                cost = (p.t["col"].detach() ** 2).sum(1) * area
                k = int(0.05 * p.n)
                extra = max(0, p.n - n) // left
                keep = torch.ones(p.n, dtype=torch.bool)
                keep[torch.argsort(cost)[:k + extra]] = False
                err = (resid ** 2).sum(-1).flatten()
                idx = torch.multinomial(err.double() + 1e-12, k, replacement=False, generator=g)
                newxy = (torch.stack([(idx % w).float(), (idx // w).float()], -1)
                         + torch.rand(k, 2, generator=g))
                sig = 0.3 * math.sqrt(h * w / p.n)
                new = {"xy": newxy, "ls": torch.full((k, 2), math.log2(max(0.5, sig))),
                       "th": torch.zeros(k), "col": resid.reshape(-1, C)[idx]}
                for key in p.t:
                    if key not in new and key not in GLOBAL:
                        ref = p.t[key].detach()
                        if key == "freq":
                            new[key] = 0.6 + 2.4 * torch.rand(k, generator=g)
                        elif key == "phase":
                            new[key] = 2 * math.pi * torch.rand(k, generator=g)
                        else:
                            new[key] = torch.zeros((k,) + tuple(ref.shape[1:]))
                p = p.select(keep).cat(new)
            solve_colors(p, pix, target, h, w)
            opt = adam(p)
        elif it % 50 == 0 and it > 0 and it < 0.9 * iters:
            solve_colors(p, pix, target, h, w)
            opt = adam(p)
        f = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / (iters - 1)))
        for gr in opt.param_groups:
            gr["lr"] = LR[gr["name"]] * 4.0 * f
        img = render(p, pix, h, w)
        loss = (img - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.t["ls"].clamp_(-1.5, 10)
            if "beta" in p.t:
                p.t["beta"].clamp_(-2, 2)
        if log and it % 100 == 0:
            print(it, p.n, psnr(img.detach(), target), file=sys.stderr)
    solve_colors(p, pix, target, h, w)
    with torch.no_grad():
        img = render(p, pix, h, w)
    return p, psnr(img, target), time.perf_counter() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", required=True)
    ap.add_argument("--kinds", default="gauss,gabor,norm,gexp,edge")
    ap.add_argument("--n", default="80,320")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = []
    for crop in a.crops.split(","):
        target = load_crop(crop)
        for n in map(int, a.n.split(",")):
            for kind in a.kinds.split(","):
                p, ps, t = fit(kind, target, n, a.iters)
                extra = {}
                if kind in ("gabor", "gabor2"):
                    amp = p.t["amp"].detach().abs()
                    if amp.dim() > 1:
                        amp = amp.max(1).values
                    extra = {"amp_gt_0.1": float((amp > 0.1).float().mean()),
                             "amp_median": float(amp.median())}
                r = {"crop": crop, "n": n, "kind": kind, "psnr": ps, "sec": t, **extra}
                torch.save({k: v.detach() for k, v in p.t.items()},
                           f"{a.out}.{crop.replace(':', '_')}.{n}.{kind}.pt")
                print(json.dumps(r), flush=True)
                res.append(r)
                with open(a.out, "w") as fh:
                    json.dump(res, fh, indent=1)
