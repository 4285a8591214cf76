"""Gabor at equal bits (issue 33 screen, step 2): fit, snap the wave parameters to candidate
grids, re-fit the rest with the waves frozen, and count the waves' bits (empirical entropy of
their indices). Compare against plain Gaussians with as many more primitives as those bits buy.

    python benchmarks/screen_primitives_bits.py --crops grass:100:100:128 --n 320 --out /tmp/q.json
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import screen_primitives as screen
import torch

# The wave grids tried: frequencies from f_lo (rad per sigma) over f_oct octaves in nf levels,
# nphase phases, amplitudes in steps of 1/amp_den up to amp_max steps, below amp_zero -> off.
GRIDS = ({"f_lo": 0.5, "f_oct": 2, "nf": 8, "nphase": 8, "amp_den": 8, "amp_max": 15,
          "amp_zero": 0.0625},
         {"f_lo": 0.5, "f_oct": 2, "nf": 8, "nphase": 8, "amp_den": 4, "amp_max": 7,
          "amp_zero": 0.125},
         {"f_lo": 0.5, "f_oct": 1, "nf": 4, "nphase": 4, "amp_den": 4, "amp_max": 7,
          "amp_zero": 0.125})


def entropy_bits(idx: np.ndarray) -> float:
    """Total bits of a sequence under its own empirical distribution (+ a table estimate)."""
    if idx.size == 0:
        return 0.0
    _, counts = np.unique(idx, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum()) + 6.0 * len(counts)


def snap(p, f_lo, f_oct, nf, nphase, amp_den, amp_max, amp_zero):
    """Snap amp/freq/phase in place; returns index arrays."""
    t = p.t
    with torch.no_grad():
        amp, freq, ph = t["amp"], t["freq"], t["phase"]
        # sign into the phase; direction of the wave: axis 1 always (freq >= 0)
        neg = freq < 0
        freq[neg] = -freq[neg]
        ph[neg] = -ph[neg]
        neg = amp < 0
        amp[neg] = -amp[neg]
        ph[neg] = ph[neg] + math.pi
        ai = torch.round(amp * amp_den).clamp(0, amp_max)
        ai[amp < amp_zero] = 0
        fi = torch.round(torch.log2(freq.clamp(min=1e-3) / f_lo) * f_oct).clamp(0, nf - 1)
        pi = torch.round(torch.remainder(ph, 2 * math.pi) / (2 * math.pi) * nphase) % nphase
        amp.copy_(ai / amp_den)
        freq.copy_(f_lo * torch.exp2(fi / f_oct))
        ph.copy_(pi * 2 * math.pi / nphase)
    on = ai.numpy() > 0
    return ai.numpy().astype(int), fi.numpy().astype(int)[on], pi.numpy().astype(int)[on]


def refit(p, target, steps, frozen=("amp", "freq", "phase")):
    h, w, C = target.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                            torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
    pix = torch.stack([xx.flatten(), yy.flatten()], -1)
    for k in frozen:
        p.t[k].requires_grad_(False)
    opt = torch.optim.Adam([{"params": [v], "lr": screen.LR[k] * 2.0, "name": k}
                            for k, v in p.t.items() if v.requires_grad],
                           betas=(0.9, 0.9), eps=1e-12)
    screen.solve_colors(p, pix, target, h, w)
    for it in range(steps):
        f = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / max(1, steps - 1)))
        for gr in opt.param_groups:
            gr["lr"] = screen.LR[gr["name"]] * 2.0 * f
        img = screen.render(p, pix, h, w)
        loss = (img - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.t["ls"].clamp_(-1.5, 10)
    screen.solve_colors(p, pix, target, h, w)
    with torch.no_grad():
        return screen.psnr(screen.render(p, pix, h, w), target)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", required=True)
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--refit", type=int, default=100)
    ap.add_argument("--ratios", default="1.0,1.15,1.3")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = []
    for crop in a.crops.split(","):
        target = screen.load_crop(crop)
        p, ps_float, t = screen.fit("gabor", target, a.n, a.iters)
        f = p.t["freq"].detach().abs()
        amp = p.t["amp"].detach().abs()
        qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
        stats = {"freq_q": [float(x) for x in torch.quantile(f, qs)],
                 "amp_q": [float(x) for x in torch.quantile(amp, qs)]}
        saved = {k: v.detach().clone() for k, v in p.t.items()}
        for grid in GRIDS:
            for k, v in saved.items():
                p.t[k] = v.clone().requires_grad_(True)
            ai, fi, pi = snap(p, **grid)
            ps_snap = refit(p, target, a.refit)
            bits = entropy_bits(ai) + entropy_bits(fi) + entropy_bits(pi)
            r = {"crop": crop, "n": a.n, "psnr_float": ps_float, "grid": grid,
                 "psnr_snap": ps_snap,
                 "wave_bits_per_prim": bits / a.n, "on": float((ai > 0).mean()), **stats}
            print(json.dumps(r), flush=True)
            res.append(r)
        for ratio in map(float, a.ratios.split(",")):
            n = int(round(a.n * ratio))
            _, ps, _ = screen.fit("gauss", target, n, a.iters)
            r = {"crop": crop, "n": n, "kind": "gauss", "ratio": ratio, "psnr": ps}
            print(json.dumps(r), flush=True)
            res.append(r)
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)
