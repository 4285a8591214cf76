"""`GaussianParams`: the fitter's float form of a set of Gaussians. Its attributes carry
the names of the format's (`bitstream.format.ATTRIBUTES`, `QuantizedGaussians`): pos,
scale, rot, color, wave, here as floats (pixels, log2 of the standard deviations, radians).

The wave (format version 5) multiplies a Gaussian by 1 + amp * cos(k . d + phase), with the
wave vector k along one of the Gaussian's axes: |k| = 2^logfreq / sigma of that axis.
`wave` is None for a set without waves (as every set before version 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..bitstream.model import ATTRIBUTES, conics_from_scale_rot

__all__ = ["ATTRIBUTES", "FIT_ATTRIBUTES", "GaussianParams", "WAVE_AMP", "WAVE_LOGFREQ",
           "WAVE_PHASE", "WAVE_AXIS", "WAVE_ON"]

# Columns of GaussianParams.wave. The axis (0: the first axis of `scale`/`rot`, 1: the
# second) and the switch (1: the wave is in use, 0: switched off by `waves.WaveSelection`)
# are labels, never fitted: renders read them detached.
WAVE_AMP, WAVE_LOGFREQ, WAVE_PHASE, WAVE_AXIS, WAVE_ON = range(5)
# The float attributes in GaussianParams' field order (wave last: it may be None).
FIT_ATTRIBUTES = ("pos", "scale", "rot", "color", "wave")


@dataclass
class GaussianParams:
    pos: torch.Tensor         # [N, 2] pixels
    scale: torch.Tensor       # [N, 2] log2 of the standard deviations along the two axes
    rot: torch.Tensor         # [N]    angle of the first axis, radians
    color: torch.Tensor       # [N, C]
    wave: torch.Tensor | None = None   # [N, 5] amp, log2 radians per sigma, phase, axis, on

    def tensors(self):
        base = [self.pos, self.scale, self.rot, self.color]
        return base if self.wave is None else base + [self.wave]

    def detach(self) -> "GaussianParams":
        return GaussianParams(*(t.detach().clone() for t in self.tensors()))

    @property
    def count(self) -> int:
        return int(self.pos.shape[0])

    def conics(self) -> torch.Tensor:
        return conics_from_scale_rot(torch.exp2(self.scale), self.rot)

    def waves(self) -> torch.Tensor | None:
        """The renderer's waves [N, 4] (kx, ky, phase, amp), or None without waves."""
        if self.wave is None:
            return None
        return wave_vectors(self.scale, self.rot, self.wave)

    def select(self, keep: torch.Tensor) -> "GaussianParams":
        return GaussianParams(*(t.detach()[keep].clone() for t in self.tensors()))

    def with_attributes(self, source: "GaussianParams", names) -> "GaussianParams":
        """A copy of self whose attributes named in `names` come from `source`."""
        return GaussianParams(*(None if getattr(source if n in names else self, n) is None
                                else getattr(source if n in names else self, n).detach().clone()
                                for n in FIT_ATTRIBUTES))

    def without_waves(self) -> "GaussianParams":
        return GaussianParams(*(t.detach().clone() for t in self.tensors()[:4]))

    @staticmethod
    def cat(a: "GaussianParams", b: "GaussianParams") -> "GaussianParams":
        if (a.wave is None) != (b.wave is None):
            raise ValueError("cannot join a set with waves and a set without")
        return GaussianParams(*(torch.cat([x.detach(), y.detach()]) for x, y in
                                zip(a.tensors(), b.tensors(), strict=True)))


def start_waves(n: int, gen: torch.Generator, logfreq: tuple, device) -> torch.Tensor:
    """[N, 5] starting waves: amplitude 0, log2 frequency uniform in `logfreq`, phase
    uniform in [0, 2 pi), a random axis (drawn from `gen`, in that order), switched on."""
    u = torch.rand(n, 3, generator=gen, device=gen.device).to(device)
    lo, hi = logfreq
    return torch.stack([torch.zeros(n, device=device), lo + (hi - lo) * u[:, 0],
                        2 * math.pi * u[:, 1], (u[:, 2] < 0.5).float(),
                        torch.ones(n, device=device)], -1)


def wave_vectors(scale: torch.Tensor, rot: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
    """(kx, ky, phase, amp) [N, 4] of waves [N, 5] on Gaussians (scale [N, 2], rot [N]);
    a switched-off wave has amp 0."""
    axis = wave[:, WAVE_AXIS].detach()
    second = axis > 0.5
    sigma_log = torch.where(second, scale[:, 1], scale[:, 0])
    direction = rot + axis * (math.pi / 2)
    k = torch.exp2(wave[:, WAVE_LOGFREQ] - sigma_log)
    return torch.stack([k * torch.cos(direction), k * torch.sin(direction),
                        wave[:, WAVE_PHASE], wave[:, WAVE_AMP] * wave[:, WAVE_ON].detach()], -1)
