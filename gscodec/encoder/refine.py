"""Changing the set of Gaussians during a fit: error-guided densify and prune
(`densify_prune`), and the strategies the free fit's Adam loop asks before each step
(`Refinement`: densify and prune at fixed fractions of the fit; `ColorResolves`: periodic
least-squares colours). A strategy returns new parameters when it acts (Adam then
restarts on them), None otherwise."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .init import blur
from .params import GaussianParams, start_waves

# New Gaussians' sigma as a share of the mean spacing (`densify_prune`): 0.3 beat 0.5 and
# 0.2 (docs/experiments.md, Fitting, 2026-11-21 free-fit rework).
NEW_SIGMA_SPACING = 0.3


def smoothed_error(resid: torch.Tensor) -> torch.Tensor:
    """[H,W]: the squared residual summed over channels, blurred (sigma 1 px): where new
    Gaussians are drawn and what they are expected to remove."""
    return blur((resid * resid).sum(-1), 1.0).clamp(min=0)


def new_sigma(obj, count: int) -> float:
    """The sigma of a new Gaussian in a set of `count` (NEW_SIGMA_SPACING of the mean
    spacing, at least half a pixel)."""
    return max(0.5, NEW_SIGMA_SPACING * math.sqrt(obj.h * obj.w / count))


def densify_prune(obj, p: GaussianParams, k: int, gen: torch.Generator, prune: bool = True,
                  extra: int = 0) -> GaussianParams:
    """Error-guided densify and prune: drop the k + extra Gaussians whose removal would
    raise the squared error least, add k where the smoothed squared residual is largest
    (positions drawn from `gen`). prune=False only adds (rate control grows a set so)."""
    if k <= 0 or (prune and p.count <= k + extra):
        return p
    with torch.no_grad():
        resid = obj.residual(p)
        err = smoothed_error(resid)
        keep = obj.keep_mask(p, resid, k + extra if prune else 0)
        if float(err.sum()) <= 0:
            return p
        idx = torch.multinomial(err.flatten().double(), k, replacement=False
                                if k <= int((err > 0).sum()) else True, generator=gen)
        jitter = torch.rand(k, 2, generator=gen, device=obj.device)
        pos = torch.stack([(idx % obj.w).float(), (idx // obj.w).float()], -1) + jitter
        # New Gaussians are small (detail), isotropic, coloured by the residual.
        scale = torch.full((k, 2), math.log2(new_sigma(obj, p.count)), device=obj.device)
        new = GaussianParams(pos, scale, torch.zeros(k, device=obj.device),
                             resid.reshape(-1, obj.c)[idx])
        if p.wave is not None:
            new.wave = start_waves(k, gen, obj.cfg.wave_start_logfreq, obj.device)
    return GaussianParams.cat(p.select(keep), new)


def cheap_count(obj, p: GaussianParams, ratio: float) -> int:
    """How many Gaussians of p cost less, removed (`removal_cost`), than `ratio` times what
    a new Gaussian is expected to gain: the smoothed squared residual under its footprint
    (2 pi sigma^2, sigma as `densify_prune` gives it), averaged over where new ones are
    drawn (in proportion to that residual)."""
    with torch.no_grad():
        resid = obj.residual(p)
        err = smoothed_error(resid).double()
        total = float(err.sum())
        if total <= 0:
            return 0
        sigma = new_sigma(obj, p.count)
        gain = float((err * err).sum()) / total * 2 * math.pi * sigma * sigma
        return int((obj.removal_cost(p, resid).double() < ratio * gain).sum())


@dataclass(frozen=True)
class Refinement:
    """Densify and prune at the fractions `at` of the fit, each moving `fraction` of the
    Gaussians, or with `gain_ratio` every one that costs less than a new one would gain
    (`cheap_count`) up to `max_fraction`, and pruning a share of those beyond `count`, so
    that the last one leaves `count`; least-squares colours after each."""
    count: int
    at: tuple
    fraction: float
    gain_ratio: float = 0.0
    max_fraction: float = 0.2

    def before_step(self, obj, state, p, step: int, steps: int):
        planned = sorted({int(f * steps) for f in self.at if 0 < f < 1})
        if step not in planned:
            return None
        left = len(planned) - planned.index(step)
        extra = max(0, p.count - self.count) // left
        k = int(self.fraction * p.count)
        # (not in a masked fit: Gaussians in the hole have no error of their own to weigh)
        if self.gain_ratio > 0 and obj.known is None:
            cheap = min(cheap_count(obj, p.detach(), self.gain_ratio),
                        int(self.max_fraction * p.count))
            k = max(k, cheap - extra)
        p = densify_prune(obj, p.detach(), k, state.gen, extra=extra)
        return obj.solve_colors(p)


@dataclass(frozen=True)
class ColorResolves:
    """Every `every` steps, up to the fraction `until` of the fit, least-squares colours
    for the current geometry (`steps` CG steps; None: the objective's default)."""
    every: int
    until: float
    steps: int | None

    def before_step(self, obj, state, p, step: int, steps: int):
        if self.every and step > 0 and step % self.every == 0 and step < self.until * steps:
            return obj.solve_colors(p, self.steps)
        return None
