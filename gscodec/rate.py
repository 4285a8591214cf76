"""Estimated bits of quantized Gaussians, for a rate term in the quantization-aware fit.

The estimate uses the same models the writer uses (`format._encode_class`): per class, the
SCALE streams (major minus its median, anisotropy) and the COLOR streams (the integer
colour transform minus per-channel medians), binarized into tokens + raw bits
(`entropy.binarize`), with the token probabilities of the frequency tables the writer
would build (`entropy.choose_codes`, `entropy.normalize`). Positions and rotations are left
out: their cost hardly depends on the values the fit can move.

`RateModel.bits(view)` takes fake-quantized parameters (straight-through rounded, so the
values are exact integers in step units) and returns a differentiable scalar: its value is
the estimated size of these streams in bits; its gradient with respect to each integer is
the central difference (cost(u+1) - cost(u-1)) / 2, which pushes values toward cheaper
neighbours. The tables are rebuilt from the current integers by `update` every few steps.
"""
from __future__ import annotations

import numpy as np
import torch

from . import entropy
from .quantize import GaussianParams, QuantConfig


def _cost_table(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Bits to code each signed value v in [lo - 1, hi + 1] as zigzag(v - median) with the
    table the writer would build for `values` (unseen tokens cost as a rare token)."""
    off = int(np.sort(values)[(len(values) - 1) // 2]) if len(values) else 0
    tokens, nbits, _ = entropy.binarize(entropy.zigzag(values - off))
    t_max = int(tokens.max()) if tokens.size else 0
    grid = np.arange(lo - 1, hi + 2, dtype=np.int64)
    gt, gn, _ = entropy.binarize(entropy.zigzag(grid - off))
    size = max(t_max, int(gt.max())) + 1
    counts = np.bincount(tokens, minlength=size).astype(np.float64)
    freqs = np.array(entropy.normalize(entropy.choose_codes(counts)), dtype=np.float64) \
        if t_max > 0 else np.full(size, float(entropy.TOTAL))
    # Tokens the table does not contain would need a larger table: charge them as the
    # rarest code (this only matters at the edges of the distribution).
    floor = float(freqs[freqs > 0].min())
    freqs = np.where(freqs > 0, freqs, floor)
    token_bits = entropy.PRECISION - np.log2(freqs)
    return token_bits[gt] + gn


class RateModel:
    def __init__(self, cfg: QuantConfig, cls: torch.Tensor, channels: int):
        self.cfg = cfg
        self.cls = cls
        self.channels = channels
        self.tables = []      # per class: [(stream tensor fn index, lo, cost, slope)]

    @staticmethod
    def _streams(v: GaussianParams, ss: torch.Tensor, den: torch.Tensor, channels: int):
        """The signed integer streams (as float tensors) the rate depends on."""
        major = v.log2_sigma[:, 0] * ss
        aniso = (v.log2_sigma[:, 0] - v.log2_sigma[:, 1]) * ss
        col = v.color * den[:, None]
        if channels >= 3:
            g = col[:, 1]
            tc = [g, col[:, 0] - g, col[:, 2] - g] + [col[:, k] for k in range(3, channels)]
        else:
            tc = [col[:, k] for k in range(channels)]
        return [major, aniso] + tc

    @torch.no_grad()
    def update(self, view: GaussianParams) -> None:
        """Rebuild the cost tables from the integers of `view` (fake-quantized parameters)."""
        _, ss, _, den = self.cfg.steps(self.cls, view.xy.device)
        streams = self._streams(view, ss, den, self.channels)
        self.tables = []
        for k in range(len(self.cfg.classes)):
            sel = (self.cls == k).cpu().numpy()
            per = []
            for s in streams:
                vals = torch.round(s).cpu().numpy().astype(np.int64)[sel]
                if vals.size == 0:
                    per.append(None)
                    continue
                lo, hi = int(vals.min()), int(vals.max())
                cost = _cost_table(vals, lo, hi)
                slope = np.zeros_like(cost)
                slope[1:-1] = 0.5 * (cost[2:] - cost[:-2])
                per.append((lo - 1, torch.from_numpy(cost).float(), torch.from_numpy(slope).float()))
            self.tables.append(per)

    def bits(self, view: GaussianParams) -> torch.Tensor:
        """Estimated bits of the SCALE and COLOR streams (differentiable, see module doc)."""
        _, ss, _, den = self.cfg.steps(self.cls, view.xy.device)
        streams = self._streams(view, ss, den, self.channels)
        total = view.xy.new_zeros(())
        for k, per in enumerate(self.tables):
            sel = self.cls == k
            for s, tab in zip(streams, per):
                if tab is None:
                    continue
                base, cost, slope = tab
                x = s[sel]
                xi = torch.round(x.detach())
                idx = (xi - base).long().clamp(0, cost.numel() - 1)
                total = total + (cost[idx] + (x - xi) * slope[idx]).sum()
        return total
