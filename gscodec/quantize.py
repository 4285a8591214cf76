"""Float Gaussians <-> the integers of a .gsi file.

The fitter works on `GaussianParams` (positions in pixels, log2 of the two standard
deviations, a rotation angle, colours). `fake_quantize` rounds them exactly as the writer
will, with a straight-through gradient, so the quantization-aware phase optimises what
the decoder will see. `to_integers` produces the `QuantizedGaussians` that is written;
`render_inputs` turns integers back into the float tensors the renderer takes, and is the
one conversion used by the decoder too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import (COLOR_RANGE, DEFAULT_COLOR_DEN, DEFAULT_POS_BITS, DEFAULT_ROT_LEVELS,
                    DEFAULT_SCALE_STEPS, LOG2_SIGMA_MAX, LOG2_SIGMA_MIN, QuantizedGaussians,
                    conics_from_scale_rot)


@dataclass(frozen=True)
class QuantConfig:
    pos_bits: int = DEFAULT_POS_BITS
    scale_steps: int = DEFAULT_SCALE_STEPS
    rot_levels: int = DEFAULT_ROT_LEVELS
    color_den: int = DEFAULT_COLOR_DEN


@dataclass
class GaussianParams:
    xy: torch.Tensor          # [N, 2] pixels
    log2_sigma: torch.Tensor  # [N, 2] log2 of the standard deviations along the two axes
    theta: torch.Tensor       # [N]    angle of the first axis, radians
    color: torch.Tensor       # [N, C]

    def tensors(self):
        return [self.xy, self.log2_sigma, self.theta, self.color]

    def detach(self) -> "GaussianParams":
        return GaussianParams(*(t.detach().clone() for t in self.tensors()))

    @property
    def count(self) -> int:
        return int(self.xy.shape[0])

    def conics(self) -> torch.Tensor:
        return conics_from_scale_rot(torch.exp2(self.log2_sigma), self.theta)

    def select(self, keep: torch.Tensor) -> "GaussianParams":
        return GaussianParams(*(t.detach()[keep].clone() for t in self.tensors()))

    @staticmethod
    def cat(a: "GaussianParams", b: "GaussianParams") -> "GaussianParams":
        return GaussianParams(*(torch.cat([x.detach(), y.detach()]) for x, y in
                                zip(a.tensors(), b.tensors())))


def canonicalize(p: GaussianParams) -> GaussianParams:
    """Same Gaussians with the first axis the major one and theta in [0, pi)."""
    with torch.no_grad():
        ls = p.log2_sigma.clone()
        theta = p.theta.clone()
        swap = ls[:, 1] > ls[:, 0]
        ls[swap] = ls[swap].flip(-1)
        theta = torch.where(swap, theta + math.pi / 2, theta)
        theta = torch.remainder(theta, math.pi)
    return GaussianParams(p.xy.detach().clone(), ls, theta, p.color.detach().clone())


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quantize(p: GaussianParams, cfg: QuantConfig, width: int, height: int) -> GaussianParams:
    """Round every attribute to the grid the file uses (straight-through gradients).
    Expects canonical parameters (see `canonicalize`); the minor axis is capped at the
    major one as the format requires."""
    ps = float(1 << cfg.pos_bits)
    lim = torch.tensor([width, height], dtype=p.xy.dtype, device=p.xy.device)
    xy = _ste_round(torch.minimum(torch.clamp(p.xy, min=0.0), lim) * ps) / ps
    lo, hi = LOG2_SIGMA_MIN, LOG2_SIGMA_MAX
    ls = _ste_round(torch.clamp(p.log2_sigma, lo, hi) * cfg.scale_steps) / cfg.scale_steps
    ls = torch.stack([ls[:, 0], torch.minimum(ls[:, 1], ls[:, 0])], -1)
    th = _ste_round(p.theta * (cfg.rot_levels / math.pi)) * (math.pi / cfg.rot_levels)
    clo, chi = COLOR_RANGE
    col = _ste_round(torch.clamp(p.color, clo, chi) * cfg.color_den) / cfg.color_den
    return GaussianParams(xy, ls, th, col)


def to_integers(p: GaussianParams, cfg: QuantConfig, width: int, height: int,
                masked: bool = False) -> QuantizedGaussians:
    p = canonicalize(p)
    with torch.no_grad():
        xy = p.xy.double().cpu().numpy()
        ls = p.log2_sigma.double().cpu().numpy()
        th = p.theta.double().cpu().numpy()
        col = p.color.double().cpu().numpy()
    ps = 1 << cfg.pos_bits
    qxy = np.rint(xy * ps).astype(np.int64)
    qxy[:, 0] = np.clip(qxy[:, 0], 0, width * ps)
    qxy[:, 1] = np.clip(qxy[:, 1], 0, height * ps)
    lo, hi = LOG2_SIGMA_MIN * cfg.scale_steps, LOG2_SIGMA_MAX * cfg.scale_steps
    qls = np.clip(np.rint(ls * cfg.scale_steps), lo, hi).astype(np.int64)
    qls[:, 1] = np.minimum(qls[:, 1], qls[:, 0])
    qrot = np.mod(np.rint(th * (cfg.rot_levels / math.pi)), cfg.rot_levels).astype(np.int64)
    clo, chi = COLOR_RANGE[0] * cfg.color_den, COLOR_RANGE[1] * cfg.color_den
    qcol = np.clip(np.rint(col * cfg.color_den), clo, chi).astype(np.int64)
    qg = QuantizedGaussians(
        width, height, col.shape[1], qxy.astype(np.int32), qls.astype(np.int32),
        qrot.astype(np.int32), qcol.astype(np.int32), cfg.pos_bits, cfg.scale_steps,
        cfg.rot_levels, cfg.color_den, masked)
    qg.validate()
    return qg.sorted()


def render_inputs(qg: QuantizedGaussians, device="cpu"):
    """(means, conics, colors) float32 tensors for the renderer, from the integers."""
    means, _, _, colors = qg.dequantize()
    conics = qg.conics()
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)
    return f(means), f(conics), f(colors)
