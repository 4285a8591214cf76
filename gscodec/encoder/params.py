"""`GaussianParams`: the fitter's float form of a set of Gaussians (positions in pixels,
log2 of the two standard deviations, a rotation angle, colours)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..bitstream.model import conics_from_scale_rot

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
