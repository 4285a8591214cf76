"""Which Gaussians keep a wave (format version 5).

A wave costs bits (about 8 per Gaussian: its amplitude, axis, frequency and phase levels),
so it is kept only where it removes more error than those bits would buy elsewhere.
`wave_values` estimates, for each wave, how much the squared error would rise without it;
`WaveSelection` switches off the waves worth less than `keep * D / N` (D: the set's summed
squared error, N: its count) at chosen points of the free fit. With the fit near an optimum
of each amplitude the error's first-order change vanishes, and the rise is the energy of
the wave's term: |c|^2 amp^2 pi sigma_1 sigma_2 (1 + exp(-omega^2) cos(2 phase)) / 2
(the integral of the squared term; omega in radians per sigma).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import WAVE_AMP, WAVE_LOGFREQ, WAVE_ON, WAVE_PHASE, GaussianParams


def wave_values(p: GaussianParams) -> torch.Tensor:
    """[N]: the rise of the summed squared error if each wave alone were removed (0 for
    switched-off waves)."""
    w = p.wave.detach()
    amp = w[:, WAVE_AMP] * w[:, WAVE_ON]
    omega2 = torch.exp2(2 * w[:, WAVE_LOGFREQ])
    area = torch.exp2(p.scale.detach().clamp(max=12)).prod(1)
    c2 = (p.color.detach() ** 2).sum(1)
    shape = 1 + torch.exp(-omega2) * torch.cos(2 * w[:, WAVE_PHASE])
    return c2 * amp * amp * math.pi * area * shape / 2


def select_waves(obj, p: GaussianParams, keep: float) -> GaussianParams:
    """p with the waves worth less than keep * D / N switched off (D: summed squared error
    of p over its known pixels and channels)."""
    if p.wave is None or p.count == 0:
        return p
    with torch.no_grad():
        r = obj.residual(p)
        total = float((r * r).sum())
        value = wave_values(p)
        p = p.detach()
        off = value < keep * total / p.count
        p.wave[off, WAVE_ON] = 0.0
        p.wave[off, WAVE_AMP] = 0.0
    return p


@dataclass(frozen=True)
class WaveSelection:
    """Switch off the waves that do not pay (`select_waves`) at the fractions `at` of the
    fit, with least-squares colours after (Adam restarts on the new set)."""
    at: tuple
    keep: float

    def before_step(self, obj, state, p, step: int, steps: int):
        planned = sorted({int(f * steps) for f in self.at if 0 < f < 1})
        if p.wave is None or step not in planned:
            return None
        return obj.solve_colors(select_waves(obj, p, self.keep))
