"""The integer form of a set of Gaussians: exactly what a .gsi file stores.

Everything the decoder needs is in `QuantizedGaussians`: integers plus a few integer
quantization parameters. `dequantize()` turns them into floats for rendering; it is the
one place that defines what the integers mean (spec/gsi-format.md, "Dequantization").

Geometry conventions (also in the spec):
- x grows to the right, y grows down; the image covers [0, W] x [0, H] and the centre of
  pixel (row i, column j) is at (j + 0.5, i + 0.5).
- A Gaussian's covariance is R(theta) diag(sigma_major^2, sigma_minor^2) R(theta)^T with
  R(theta) = [[cos, -sin], [sin, cos]], so the major axis points along (cos theta, sin theta).
  Sizes are coded as log2(sigma) on a uniform grid, so every decodable Gaussian is positive
  definite and the relative precision of a size is the same at every scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Limits shared by encoder, decoder and spec.
MAX_SIDE = 16384                 # largest width or height the format allows
LOG2_SIGMA_MIN = -3              # sigma >= 1/8 pixel
LOG2_SIGMA_MAX = 15              # sigma <= 32768 pixels
COLOR_RANGE = (-2, 3)            # colour integers lie in [-2*den, 3*den] (colour 1.0 = full scale)
CHANNEL_COUNTS = (1, 2, 3, 4)    # L, LA, RGB, RGBA

# Default quantization (the encoder may choose others; they are written in the header).
DEFAULT_POS_BITS = 2             # positions in quarter pixels
DEFAULT_SCALE_STEPS = 16         # log2(sigma) in steps of 1/16 octave (measured: see README)
DEFAULT_ROT_LEVELS = 128         # theta in steps of pi/128 (measured: see README)
DEFAULT_COLOR_DEN = 64           # colour in steps of 1/64 (measured: see README)


@dataclass
class QuantizedGaussians:
    width: int
    height: int
    channels: int
    xy: np.ndarray               # int32 [N, 2], in [0, W << pos_bits] x [0, H << pos_bits]
    log_scale: np.ndarray        # int32 [N, 2], (major, minor), major >= minor, in sigma range
    rot: np.ndarray              # int32 [N],    in [0, rot_levels)
    color: np.ndarray            # int32 [N, C], in [COLOR_RANGE[0]*den, COLOR_RANGE[1]*den]
    pos_bits: int = DEFAULT_POS_BITS
    scale_steps: int = DEFAULT_SCALE_STEPS
    rot_levels: int = DEFAULT_ROT_LEVELS
    color_den: int = DEFAULT_COLOR_DEN
    masked: bool = False         # fitted under an inpainting mask (informational)
    extra: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.xy.shape[0])

    # ---- ranges -------------------------------------------------------------------------
    def log_scale_range(self) -> tuple[int, int]:
        return LOG2_SIGMA_MIN * self.scale_steps, LOG2_SIGMA_MAX * self.scale_steps

    def color_range(self) -> tuple[int, int]:
        return COLOR_RANGE[0] * self.color_den, COLOR_RANGE[1] * self.color_den

    def validate(self) -> None:
        """Raise ValueError if any field is outside the ranges the format allows."""
        n, c = self.count, self.channels
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{MAX_SIDE}")
        if c not in CHANNEL_COUNTS:
            raise ValueError(f"channel count {c} not one of {CHANNEL_COUNTS}")
        shapes = {"xy": (n, 2), "log_scale": (n, 2), "rot": (n,), "color": (n, c)}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
        if n:
            if self.xy.min() < 0 or self.xy[:, 0].max() > self.width << self.pos_bits \
                    or self.xy[:, 1].max() > self.height << self.pos_bits:
                raise ValueError("position outside the image")
            lo, hi = self.log_scale_range()
            if self.log_scale.min() < lo or self.log_scale.max() > hi:
                raise ValueError("log-scale outside the allowed range")
            if np.any(self.log_scale[:, 0] < self.log_scale[:, 1]):
                raise ValueError("minor scale larger than major scale")
            if self.rot.min() < 0 or self.rot.max() >= self.rot_levels:
                raise ValueError("rotation index outside [0, rot_levels)")
            lo, hi = self.color_range()
            if self.color.min() < lo or self.color.max() > hi:
                raise ValueError("colour outside the allowed range")

    # ---- canonical order ----------------------------------------------------------------
    def canonical_order(self) -> np.ndarray:
        """Permutation that sorts the Gaussians as the file stores them: by the Morton code
        of the quantized position, ties broken by the remaining integers in field order."""
        keys = [self.color[:, k] for k in range(self.channels - 1, -1, -1)]
        keys += [self.rot, self.log_scale[:, 1], self.log_scale[:, 0]]
        keys.append(morton_code(self.xy[:, 0], self.xy[:, 1]))
        return np.lexsort(keys)

    def sorted(self) -> "QuantizedGaussians":
        order = self.canonical_order()
        return QuantizedGaussians(
            self.width, self.height, self.channels,
            self.xy[order], self.log_scale[order], self.rot[order], self.color[order],
            self.pos_bits, self.scale_steps, self.rot_levels, self.color_den,
            self.masked, dict(self.extra))

    # ---- dequantization -----------------------------------------------------------------
    def dequantize(self):
        """Return float64 arrays (means [N,2], sigma [N,2] (major, minor), theta [N],
        colors [N,C]) exactly as spec/gsi-format.md defines them."""
        means = self.xy.astype(np.float64) / float(1 << self.pos_bits)
        sigma = np.exp2(self.log_scale.astype(np.float64) / self.scale_steps)
        theta = np.pi * self.rot.astype(np.float64) / self.rot_levels
        colors = self.color.astype(np.float64) / self.color_den
        return means, sigma, theta, colors

    def conics(self) -> np.ndarray:
        """Inverse covariances (a, b, c) with Sigma^-1 = [[a, b], [b, c]], float64 [N, 3]."""
        _, sigma, theta, _ = self.dequantize()
        return conics_from_scale_rot(sigma, theta)


def conics_from_scale_rot(sigma, theta):
    """(a, b, c) of Sigma^-1 for sigma [N,2] (major, minor) and theta [N]. Works on numpy
    arrays and on torch tensors (so the fitter differentiates through the same formula)."""
    xp = _namespace(sigma)
    cos, sin = xp.cos(theta), xp.sin(theta)
    inv1 = 1.0 / (sigma[:, 0] * sigma[:, 0])
    inv2 = 1.0 / (sigma[:, 1] * sigma[:, 1])
    a = cos * cos * inv1 + sin * sin * inv2
    b = cos * sin * (inv1 - inv2)
    c = sin * sin * inv1 + cos * cos * inv2
    return xp.stack([a, b, c], -1) if xp is not np else np.stack([a, b, c], axis=-1)


def _namespace(x):
    if isinstance(x, np.ndarray):
        return np
    import torch
    return torch


def morton_code(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Interleave the bits of non-negative x and y (< 2^31): bit k of x goes to bit 2k,
    bit k of y to bit 2k+1. Returns uint64."""
    def spread(v):
        v = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
        v = (v | (v << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x3333333333333333)
        v = (v | (v << np.uint64(1))) & np.uint64(0x5555555555555555)
        return v
    return spread(np.asarray(x)) | (spread(np.asarray(y)) << np.uint64(1))
