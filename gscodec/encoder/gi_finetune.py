"""The `gaussianimage` profile's encoder: GaussianImage's quantization-aware fine-tune of
our free fit (straight-through binary16 positions, learned 6-bit min/max Cholesky
quantizers, 2-stage residual VQ colour with EMA codebooks), ending in the integers that
`gscodec.bitstream.gaussianimage` writes. `GIFineTune` is that step as a pipeline stage
(the profile's tail: `pipeline.TAILS["gaussianimage"]`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..bitstream.gaussianimage import (
    CHOL_LEVELS,
    DEFAULT_CODEBOOK_SIZE,
    MAX_CODEBOOK_LOG2,
    RVQ_STAGES,
    GIGaussians,
)
from ..render import render
from .adam import Adam, lr_factor
from .config import FitConfig
from .progress import Progress


def conics_from_cholesky(L: torch.Tensor) -> torch.Tensor:
    """Differentiable torch version for the fine-tune (near-singular L gives (0, 0, 0))."""
    l11, l21, l22 = L[:, 0], L[:, 1], L[:, 2]
    ok = (l11.abs() > 1e-4) & (l22.abs() > 1e-4)
    one = torch.ones_like(l11)
    s11 = torch.where(ok, l11, one)
    s22 = torch.where(ok, l22, one)
    inv22 = 1.0 / (s22 * s22)
    a = (l21 * l21 + s22 * s22) / (s11 * s11) * inv22
    b = -(l21 / s11) * inv22
    zero = torch.zeros_like(l11)
    return torch.stack([torch.where(ok, a, zero), torch.where(ok, b, zero),
                        torch.where(ok, inv22, zero)], -1)


def cholesky_from_params(params) -> torch.Tensor:
    """(l11, l21, l22) [N,3] float64 of Sigma = R diag(s1^2, s2^2) R^T (our fitter's form)."""
    s = torch.exp2(params.scale.detach().double())
    th = params.rot.detach().double()
    cos, sin = torch.cos(th), torch.sin(th)
    v1, v2 = s[:, 0] ** 2, s[:, 1] ** 2
    s11 = v1 * cos * cos + v2 * sin * sin
    s12 = (v1 - v2) * cos * sin
    l11 = torch.sqrt(s11)
    l21 = s12 / l11
    l22 = s[:, 0] * s[:, 1] / l11          # sqrt(det) / l11, stable for thin Gaussians
    return torch.stack([l11, l21, l22], -1)


def _half_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.half().float() - x).detach()


def _kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means from k samples of x (with replacement when x has fewer rows)."""
    n = x.shape[0]
    if n >= k:
        init = torch.randperm(n, generator=gen, device=gen.device)[:k].to(x.device)
    else:
        init = torch.randint(0, n, (k,), generator=gen, device=gen.device).to(x.device)
    cb = x[init].clone()
    for _ in range(iters):
        idx = torch.cdist(x, cb).argmin(1)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(cb).index_add_(0, idx, x)
        filled = counts > 0
        cb[filled] = sums[filled] / counts[filled, None]
    return cb


class _RVQ:
    """Residual VQ with EMA codebook updates (decay 0.8, Laplace smoothing), as
    GaussianImage's ResidualVQ(decay=0.8, commitment_weight=1, kmeans_init=True)."""

    def __init__(self, x: torch.Tensor, k: int, stages: int, kmeans_iters: int,
                 gen: torch.Generator, decay: float = 0.8, eps: float = 1e-5):
        self.k, self.decay, self.eps = k, decay, eps
        self.cb, self.size, self.sum = [], [], []
        r = x.detach()
        for _ in range(stages):
            cb = _kmeans(r, k, kmeans_iters, gen)
            idx = torch.cdist(r, cb).argmin(1)
            cnt = torch.bincount(idx, minlength=k).to(r.dtype)
            self.cb.append(cb)
            self.size.append(cnt.clone())
            self.sum.append(cb * cnt[:, None])
            r = r - cb[idx]

    def forward(self, x: torch.Tensor, update: bool):
        """(quantized colours with a straight-through gradient, commitment loss,
        indices [N,stages], the binary16-rounded codebooks used)."""
        r = x
        q_total = torch.zeros_like(x)
        commit = x.new_zeros(())
        idxs, used = [], []
        for s, cb in enumerate(self.cb):
            cbh = cb.half().float()                       # what the file will hold
            rd = r.detach()
            idx = torch.cdist(rd, cbh).argmin(1)
            q = cbh[idx]
            commit = commit + ((r - q) ** 2).mean()
            if update:
                self._ema(s, rd, idx)
            q_total = q_total + q
            r = r - q
            idxs.append(idx)
            used.append(cbh)
        out = x + (q_total - x).detach()
        return out, commit, torch.stack(idxs, -1), torch.stack(used)

    @torch.no_grad()
    def _ema(self, s: int, r: torch.Tensor, idx: torch.Tensor):
        d, k = self.decay, self.k
        cnt = torch.bincount(idx, minlength=k).to(r.dtype)
        sums = torch.zeros_like(self.cb[s]).index_add_(0, idx, r)
        self.size[s].mul_(d).add_(cnt, alpha=1 - d)
        self.sum[s].mul_(d).add_(sums, alpha=1 - d)
        tot = self.size[s].sum()
        smooth = (self.size[s] + self.eps) / (tot + k * self.eps) * tot
        self.cb[s] = self.sum[s] / smooth[:, None]


@dataclass
class GIFineTuneConfig:
    # Learning rates for a short fine-tune (GaussianImage: Adan, lr 1e-3, 50k steps),
    # chosen on kodim03 (2359 Gaussians, 200 steps, K = 8): 27.4 dB with a tenth of these
    # rates, 29.5 dB with them.
    lr_xy_px: float = 0.3         # Adam step of positions, in pixels at the image centre
    lr_chol: float = 0.2          # Cholesky elements, pixels
    lr_color: float = 0.02
    lr_qmin: float = 0.05         # learned quantizer offset (pixels)
    lr_qlogstep: float = 0.05     # learned quantizer step (log)
    lr_final_fraction: float = 0.05
    commitment: float = 1.0       # weight of the RVQ commitment loss
    kmeans_iters: int = 5
    # The Cholesky quantizers start at these quantiles of each element, not at its min and
    # max (GaussianImage's init): after a long free fit a handful of Gaussians stretch the
    # range (kodim23, density 24, 2400 iterations: l21 from -96 to +32 px, 98 % of it
    # within -8.4..+7.6), and 64 levels over the whole range lost 2.2 dB against the
    # 800-iteration fit. From quantiles 0.5 / 1 / 2 %: 32.46 / 32.71 / 32.75 dB against
    # 31.26 (33.44 at 800). The few outside are clamped to the end codes.
    chol_init_quantile: float = 0.01


@dataclass(frozen=True)
class GIFineTune:
    """The gaussianimage profile's stage after the free fit: `quantize_gaussianimage` for
    cfg.gi_qat_steps() steps, drawing from the state's generator; state.coded the codes."""
    cfg: FitConfig
    name: ClassVar[str] = "gi-quantize"

    def steps(self, objective) -> int:
        return self.cfg.gi_qat_steps()

    def run(self, objective, state, bar: Progress) -> None:
        state.coded = quantize_gaussianimage(objective, state.params, self.steps(objective),
                                             state.gen, bar)


def quantize_gaussianimage(objective, params, iterations: int, gen: torch.Generator,
                           bar: Progress | None = None,
                           codebook_size: int = DEFAULT_CODEBOOK_SIZE,
                           cfg: GIFineTuneConfig | None = None) -> GIGaussians:
    """GaussianImage's quantization-aware fine-tune of our free fit, then its codes.

    objective: `objective.Objective` of the image; params: `GaussianParams` from the free
    fit; gen: the encode's generator (k-means starts). The Gaussians
    are converted to (u, v) = tanh(z), the Cholesky factor and colours; `iterations` Adam
    steps then minimise MSE(clamp(render, 0, 1)) + commitment loss on fake-quantized
    attributes (straight-through binary16 rounding of (u, v), learned 6-bit min/max
    quantization of L, RVQ colours with EMA-updated codebooks). As GaussianImage's
    test script does, the best iterate (lowest training MSE) is the one written."""
    cfg = cfg or GIFineTuneConfig()
    k = int(codebook_size)
    if not (2 <= k <= 1 << MAX_CODEBOOK_LOG2 and k & (k - 1) == 0):
        raise ValueError("codebook_size must be a power of two in 2..256")
    w, h, c = objective.w, objective.h, objective.c
    n = params.count
    backend = objective.cfg.backend
    bar = bar if bar is not None else Progress(0, False)

    dev = objective.device
    wh = torch.tensor([float(w), float(h)], dtype=torch.float64, device=dev)
    u = (2.0 * params.pos.detach().double() / wh - 1.0).clamp(-1 + 1e-7, 1 - 1e-7)
    z = torch.atanh(u).float().requires_grad_(True)
    L = cholesky_from_params(params).float().requires_grad_(True)
    col = params.color.detach().float().clone().requires_grad_(True)
    lo0, hi0 = _quantizer_range(L.detach(), cfg.chol_init_quantile)
    qmin = lo0.clone().requires_grad_(True)
    qlogstep = torch.log(((hi0 - lo0) / CHOL_LEVELS).clamp(min=1e-6)).requires_grad_(True)
    rvq = _RVQ(col.detach() if n else torch.zeros(1, c, device=dev), k, RVQ_STAGES,
               cfg.kmeans_iters, gen)

    half = torch.tensor([w / 2.0, h / 2.0], device=dev)

    def forward(update: bool):
        uq = _half_ste(torch.tanh(z))
        means = (uq + 1.0) * half
        step = torch.exp(qlogstep)
        code = ((L - qmin) / step).clamp(0, CHOL_LEVELS)
        qcode = code + (torch.round(code) - code).detach()
        Lq = qcode * step + qmin
        colq, commit, idx, used = rvq.forward(col, update)
        out = render(means, conics_from_cholesky(Lq), colq, h, w, backend=backend)
        mse = objective.mse(out.clamp(0.0, 1.0))
        snap = (uq.detach().half(), torch.round(code).detach().to(torch.uint8),
                qmin.detach().clone(), (qmin + CHOL_LEVELS * step).detach().clone(),
                used.detach().half(), idx.detach().to(torch.uint8))
        return mse, commit, snap

    best = (math.inf, None)
    if n:
        lr_z = cfg.lr_xy_px / (0.5 * max(w, h))
        opt = Adam([(z, lr_z), (L, cfg.lr_chol), (col, cfg.lr_color), (qmin, cfg.lr_qmin),
                    (qlogstep, cfg.lr_qlogstep)])
        for it in range(iterations):
            f = lr_factor(it, iterations, cfg.lr_final_fraction)
            opt.lr = [lr * f for lr in opt.base_lr]
            mse, commit, snap = forward(update=True)
            mv = float(mse.detach())
            if mv < best[0]:
                best = (mv, snap)
            loss = mse + cfg.commitment * commit
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update("gi-quantize", mv)
        with torch.no_grad():
            mse, _, snap = forward(update=False)
        if float(mse) <= best[0] or best[1] is None:
            best = (float(mse), snap)
        uq, cq, lo, hi, cbs, idx = best[1]
    else:
        with torch.no_grad():
            _, _, (uq, cq, lo, hi, cbs, idx) = forward(update=False)
    return _codes(w, h, c, k, uq, cq, lo, hi, cbs, idx)


def _quantizer_range(L: torch.Tensor, quantile: float):
    """(lo, hi) [3] where each Cholesky element's quantizer starts: the m smallest and m
    largest of each element are left out, m = floor(q (n - 1)) (none in a set under 1 / q
    Gaussians, whose extremes are not outliers); (0, 1) for an empty set."""
    n = L.shape[0]
    if not n:
        return torch.zeros(3, device=L.device), torch.ones(3, device=L.device)
    m = int(min(max(quantile, 0.0), 0.5) * (n - 1))
    srt = torch.sort(L, dim=0).values
    return srt[m], srt[n - 1 - m]


def _codes(w, h, c, k, uq, cq, lo, hi, cbs, idx) -> GIGaussians:
    """The profile's integers from a snapshot of the fine-tune (checked)."""
    n = uq.shape[0]
    g = GIGaussians(
        w, h, c,
        xy_half=uq.cpu().numpy().astype(np.float16).view(np.uint16).reshape(n, 2),
        chol_q=cq.cpu().numpy().astype(np.uint8).reshape(n, 3),
        chol_min=lo.cpu().numpy().astype(np.float32),
        chol_max=np.maximum(hi.cpu().numpy().astype(np.float32),
                            lo.cpu().numpy().astype(np.float32)),
        codebooks=cbs.cpu().numpy().astype(np.float16).view(np.uint16)
        .reshape(RVQ_STAGES, k, c),
        color_idx=idx.cpu().numpy().astype(np.uint8).reshape(n, RVQ_STAGES))
    g.validate()
    return g
