"""The fit's gradients in closed form, without autograd.

The kernel gives the loss's gradients with respect to each Gaussian's mean, conic and
colour. The conic (a, b, c) of Sigma^-1 is a small closed-form function of the log2
scales (l1, l2) and the angle theta (`bitstream.model.conics_from_scale_rot`):

    a = cos^2 i1 + sin^2 i2,   b = cos sin (i1 - i2),   c = sin^2 i1 + cos^2 i2,
    i_k = 2^(-2 l_k),   d i_k / d l_k = -2 ln 2 i_k,

so the chain rule to (l1, l2, theta) is a few operations on [N] tensors (`conic_gradients`),
in place of an autograd graph of a dozen tiny operations each step (Fitting, 2026-12-06,
issue 30).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LN2 = math.log(2.0)


@dataclass
class ConicParts:
    """What the chain rule needs of the conics' forward."""
    cos: torch.Tensor
    sin: torch.Tensor
    inv1: torch.Tensor   # 1 / sigma_1^2
    inv2: torch.Tensor   # 1 / sigma_2^2


def conics_with_parts(scale: torch.Tensor, rot: torch.Tensor):
    """(conics [N, 3] contiguous, ConicParts) of log2 scales [N, 2] and angles [N]."""
    inv = torch.exp2(-2.0 * scale)
    inv1, inv2 = inv[:, 0], inv[:, 1]
    cos, sin = torch.cos(rot), torch.sin(rot)
    cc, ss, cs = cos * cos, sin * sin, cos * sin
    conics = torch.stack([cc * inv1 + ss * inv2, cs * (inv1 - inv2), ss * inv1 + cc * inv2], 1)
    return conics, ConicParts(cos, sin, inv1, inv2)


def conic_gradients(parts: ConicParts, gq: torch.Tensor):
    """(g_scale [N, 2], g_rot [N]): the gradients with respect to the log2 scales and the
    angle, given those with respect to the conics, gq [N, 3]."""
    c, s, inv1, inv2 = parts.cos, parts.sin, parts.inv1, parts.inv2
    ga, gb, gc = gq[:, 0], gq[:, 1], gq[:, 2]
    cc, ss, cs = c * c, s * s, c * s
    g1 = (-2.0 * _LN2) * inv1 * (cc * ga + cs * gb + ss * gc)
    g2 = (-2.0 * _LN2) * inv2 * (ss * ga - cs * gb + cc * gc)
    # d(a, b, c)/d theta = (i1 - i2) (-sin 2t, cos 2t, sin 2t)
    g_rot = (inv1 - inv2) * ((2.0 * cs) * (gc - ga) + (cc - ss) * gb)
    return torch.stack([g1, g2], 1), g_rot
