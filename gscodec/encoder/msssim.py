"""MS-SSIM (Wang, Simoncelli and Bovik 2003) in torch, differentiable: the `--tune ssim`
loss term (`objective.SSIMObjective`).

The formula, window and weights are those of pytorch-msssim, the benchmark's metric
(`benchmark/distortion.py`): an 11-tap Gaussian window of sigma 1.5 applied separably
without padding, K = (0.01, 0.03), 2x2 average pooling between scales, five scales
weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), the product taken per channel and
averaged over channels. Two differences, both for the loss: an image too small for five
scales (smaller side <= 160) gets as many as fit (`scales_for`: the coarsest scale keeps
at least 11 pixels) with the first weights renormalised to sum to 1 (one scale is SSIM);
and the per-scale terms are clamped at a small positive floor instead of at 0, so that
their fractional powers keep finite gradients. Written here rather than imported because
pytorch-msssim refuses any image under 161 pixels whatever the number of scales; the
test suite checks it against pytorch-msssim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WIN = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
FLOOR = 1e-6   # floor of the per-scale terms (pytorch-msssim: 0)


def scales_for(height: int, width: int) -> int:
    """Scales of MS-SSIM for an image of this size: five where pytorch-msssim takes it
    (smaller side > 160), else the most whose coarsest scale has a side over 10 pixels
    (side > 10 * 2^(s-1)); 0 when the image is too small for one window (side <= 10)."""
    side = min(height, width)
    s = 0
    while s < len(WEIGHTS) and side > (WIN - 1) * 2 ** s:
        s += 1
    return s


def _window(channels: int, device, dtype) -> torch.Tensor:
    x = torch.arange(WIN, dtype=torch.float32) - WIN // 2
    g = torch.exp(-(x * x) / (2 * SIGMA * SIGMA))
    g = (g / g.sum()).to(device, dtype)
    return g.view(1, 1, 1, WIN).repeat(channels, 1, 1, 1)


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """The separable Gaussian window, no padding (pytorch-msssim's gaussian_filter)."""
    c = x.shape[1]
    x = F.conv2d(x, win.transpose(2, 3), groups=c)
    return F.conv2d(x, win, groups=c)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor, data_range: float):
    """Per-channel mean SSIM and contrast-structure term of x, y ([1, C, H, W])."""
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    c = x.shape[1]
    # The five blurs in one grouped convolution.
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), win.repeat(5, 1, 1, 1))
    mu1, mu2, xx, yy, xy = stats.split(c, 1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs_map = (2 * (xy - mu12) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2)
    ssim_map = (2 * mu12 + c1) / (mu1_sq + mu2_sq + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
            scales: int | None = None, first: int = 0) -> torch.Tensor:
    """MS-SSIM of two images [H, W, C] (or [1, C, H, W]), a scalar tensor differentiable in
    both, over `scales` scales (default `scales_for` the size) weighted by WEIGHTS[first:
    first + scales] (renormalised unless they are all five). first=1 on images pooled 2x2
    is MS-SSIM without its finest scale."""
    if x.dim() == 3:
        x = x.permute(2, 0, 1)[None]
        y = y.permute(2, 0, 1)[None]
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    s = scales_for(x.shape[-2], x.shape[-1]) if scales is None else int(scales)
    s = min(s, len(WEIGHTS) - first)
    if s < 1 or min(x.shape[-2:]) <= (WIN - 1) * 2 ** (s - 1):
        raise ValueError(f"an image of {x.shape[-1]}x{x.shape[-2]} has no MS-SSIM at {s} "
                         f"scales")
    w = torch.tensor(WEIGHTS[first:first + s], dtype=x.dtype, device=x.device)
    if s < len(WEIGHTS):   # (the five weights are pytorch-msssim's as they are: sum 1.0001)
        w = w / w.sum()
    win = _window(x.shape[1], x.device, x.dtype)
    terms = []
    for k in range(s):
        ssim, cs = _ssim_cs(x, y, win, data_range)
        if k < s - 1:
            terms.append(cs)
            pad = [n % 2 for n in x.shape[2:]]
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
    terms.append(ssim)
    stacked = torch.stack(terms).clamp(min=FLOOR)          # [scales, 1, C]
    return torch.prod(stacked ** w.view(-1, 1, 1), 0).mean()


class MSSSIMTo:
    """MS-SSIM against one fixed target ([1, C, H, W]), with the target's pyramid and its
    blurred statistics computed once: each call blurs three maps of the render (x, x*x,
    x*y) instead of five. Same value as `ms_ssim(x, target, data_range, scales, first)`."""

    def __init__(self, target: torch.Tensor, data_range: float = 1.0,
                 scales: int | None = None, first: int = 0):
        s = scales_for(target.shape[-2], target.shape[-1]) if scales is None else int(scales)
        s = min(s, len(WEIGHTS) - first)
        if s < 1 or min(target.shape[-2:]) <= (WIN - 1) * 2 ** (s - 1):
            raise ValueError(f"an image of {target.shape[-1]}x{target.shape[-2]} has no "
                             f"MS-SSIM at {s} scales")
        w = torch.tensor(WEIGHTS[first:first + s], dtype=target.dtype, device=target.device)
        self.weights = w / w.sum() if s < len(WEIGHTS) else w
        self.c1, self.c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
        self.win = _window(3 * target.shape[1], target.device, target.dtype)
        self.levels = []          # (target, its blurred mean, its blurred variance) per scale
        y = target.detach()
        for k in range(s):
            mu, yy = _blur(torch.cat([y, y * y], 1), self.win[:2 * y.shape[1]]).split(
                y.shape[1], 1)
            self.levels.append((y, mu, yy - mu * mu))
            if k < s - 1:
                y = F.avg_pool2d(y, 2, padding=[n % 2 for n in y.shape[2:]])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        terms = []
        c = x.shape[1]
        for k, (y, mu2, var2) in enumerate(self.levels):
            mu1, xx, xy = _blur(torch.cat([x, x * x, x * y], 1), self.win).split(c, 1)
            mu1_sq, mu12 = mu1 * mu1, mu1 * mu2
            cs_map = (2 * (xy - mu12) + self.c2) / ((xx - mu1_sq) + var2 + self.c2)
            if k < len(self.levels) - 1:
                terms.append(cs_map.flatten(2).mean(-1))
                x = F.avg_pool2d(x, 2, padding=[n % 2 for n in x.shape[2:]])
            else:
                ssim_map = (2 * mu12 + self.c1) / (mu1_sq + mu2 * mu2 + self.c1) * cs_map
                terms.append(ssim_map.flatten(2).mean(-1))
        stacked = torch.stack(terms).clamp(min=FLOOR)
        return torch.prod(stacked ** self.weights.view(-1, 1, 1), 0).mean()
