"""`GaussianParams`: the fitter's float form of a set of Gaussians. Its attributes carry
the names of the format's (`bitstream.format.ATTRIBUTES`, `QuantizedGaussians`): pos,
scale, rot, color, here as floats (pixels, log2 of the standard deviations, radians)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..bitstream.model import ATTRIBUTES, conics_from_scale_rot

__all__ = ["ATTRIBUTES", "GaussianParams"]


@dataclass
class GaussianParams:
    pos: torch.Tensor         # [N, 2] pixels
    scale: torch.Tensor       # [N, 2] log2 of the standard deviations along the two axes
    rot: torch.Tensor         # [N]    angle of the first axis, radians
    color: torch.Tensor       # [N, C]

    def tensors(self):
        return [self.pos, self.scale, self.rot, self.color]

    def detach(self) -> "GaussianParams":
        return GaussianParams(*(t.detach().clone() for t in self.tensors()))

    @property
    def count(self) -> int:
        return int(self.pos.shape[0])

    def conics(self) -> torch.Tensor:
        return conics_from_scale_rot(torch.exp2(self.scale), self.rot)

    def select(self, keep: torch.Tensor) -> "GaussianParams":
        return GaussianParams(*(t.detach()[keep].clone() for t in self.tensors()))

    @staticmethod
    def cat(a: "GaussianParams", b: "GaussianParams") -> "GaussianParams":
        return GaussianParams(*(torch.cat([x.detach(), y.detach()]) for x, y in
                                zip(a.tensors(), b.tensors(), strict=True)))
