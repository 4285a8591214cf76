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

from dataclasses import dataclass, replace

import numpy as np

# Limits shared by encoder, decoder and spec.
MAX_SIDE = 16384                 # largest width or height the format allows
# A Gaussian's attributes, one name each everywhere: the sections of a class (POS, SCALE,
# ROT, COLOR, WAVE), QuantizedGaussians' arrays and the encoder's GaussianParams.
ATTRIBUTES = ("pos", "scale", "rot", "color", "wave")
# The parts of a wave (format v5), the columns of QuantizedGaussians.wave: its amplitude
# (0: no wave), the axis it runs along (0: major, 1: minor), its frequency and phase levels.
WAVE_PARTS = ("amp", "axis", "freq", "phase")
LOG2_SIGMA_MIN = -3              # sigma >= 1/8 pixel
LOG2_SIGMA_MAX = 15              # sigma <= 32768 pixels
COLOR_RANGE = (-2, 3)            # colour integers lie in [-2*den, 3*den] (colour 1.0 = full scale)
CHANNEL_COUNTS = (1, 2, 3, 4)    # L, LA, RGB, RGBA

# Default quantization (the encoder may choose others; they are written in the header).
DEFAULT_POS_BITS = 2             # positions in quarter pixels
DEFAULT_SCALE_STEPS = 16         # log2(sigma) in steps of 1/16 octave (docs/experiments.md)
DEFAULT_ROT_LEVELS = 128         # theta in steps of pi/128 (docs/experiments.md)
DEFAULT_COLOR_DEN = 64           # colour in steps of 1/64 (docs/experiments.md)


# Ranges of a class's step parameters (the class record's fields).
PARAM_RANGES = {"pos_bits": (0, 8), "scale_steps": (1, 64), "rot_levels": (1, 4096),
                "color_den": (1, 65535)}
MAX_CLASSES = 8                  # covariance/precision classes per file (format v2)
MAX_BUCKETS = 8                  # colour buckets per class (format v3 on)
AREA_LO_RANGE = (2 * LOG2_SIGMA_MIN, 2 * LOG2_SIGMA_MAX)   # octaves of sigma_major * sigma_minor
ROT_BIAS_RANGE = (-128, 127)     # format v4: the angle-level offset of a class (i8)
# Format v5: a class's wave steps (its record's u8 wave_den, u8 F, i8 f0, u8 P)
WAVE_RANGES = {"wave_den": (0, 255), "wave_freqs": (1, 32), "wave_f0": (-32, 32),
               "wave_phases": (1, 64)}
WAVE_AMP_MAX = 4                 # amplitude integers lie in [0, 4 * wave_den]
UNIFORM_ROT_BIAS = 127           # every anisotropic Gaussian gets rot_levels (versions 1-3)
MAX_ANISO = (LOG2_SIGMA_MAX - LOG2_SIGMA_MIN) * PARAM_RANGES["scale_steps"][1]
# ILOG4[a] = floor(4 log2 a) = bit_length(a^4) - 1, exactly (ILOG4[0] is unused)
ILOG4 = np.array([0] + [(a ** 4).bit_length() - 1 for a in range(1, MAX_ANISO + 1)],
                 dtype=np.int64)


@dataclass(frozen=True)
class QuantClass:
    """Quantization steps shared by one class of Gaussians (the file stores one record per
    class): positions in 1/2^pos_bits pixel, log2(sigma) in 1/scale_steps, theta in
    pi/L, where L <= rot_levels follows from the Gaussian's shape (`angle_levels`), colour
    in 1/den of the Gaussian's colour bucket.

    Colour buckets (format v3): a colour error spreads over a Gaussian's whole footprint,
    so large Gaussians want finer colour steps than small ones. The bucket of a Gaussian is
    the octave of its area sigma_major * sigma_minor counted from `area_lo` (clamped to
    0..B-1); bucket 0 has `color_den`, bucket b >= 1 has `color_dens[b - 1]`. With no
    `color_dens` (B = 1) every Gaussian of the class has `color_den`, as in version 2.

    Angle levels (format v4): an angle error costs little on a nearly round Gaussian and
    much on an elongated or large one, so the number of angle levels L of a Gaussian grows
    with its anisotropy and (more slowly) its area, from `rot_bias`, up to `rot_levels`
    (`angle_levels`; spec section 3.2). rot_bias = UNIFORM_ROT_BIAS gives every
    anisotropic Gaussian rot_levels, as in versions 1 to 3.

    Waves (format v5): a Gaussian may be modulated by a cosine wave along one of its axes
    (`QuantizedGaussians.wave_vectors`): amplitude in 1/wave_den (0 < amp <= 4 wave_den),
    frequency 2^((wave_f0 + f) / 2) radians per standard deviation (f < wave_freqs), phase
    in 2 pi / wave_phases. wave_den = 0: no Gaussian of the class has a wave (the canonical
    class then has wave_freqs 1, wave_f0 0, wave_phases 1)."""
    pos_bits: int = DEFAULT_POS_BITS
    scale_steps: int = DEFAULT_SCALE_STEPS
    rot_levels: int = DEFAULT_ROT_LEVELS
    color_den: int = DEFAULT_COLOR_DEN
    area_lo: int = 0
    color_dens: tuple = ()
    rot_bias: int = UNIFORM_ROT_BIAS
    wave_den: int = 0
    wave_freqs: int = 1
    wave_f0: int = 0
    wave_phases: int = 1

    def astuple(self) -> tuple[int, int, int, int]:
        """The four step parameters (colour: bucket 0's denominator)."""
        return (self.pos_bits, self.scale_steps, self.rot_levels, self.color_den)

    @property
    def buckets(self) -> int:
        return 1 + len(self.color_dens)

    def dens(self) -> tuple[int, ...]:
        """Colour denominators of buckets 0..B-1."""
        return (self.color_den,) + tuple(self.color_dens)

    def wave_steps(self) -> tuple[int, int, int, int]:
        """(wave_den, wave_freqs, wave_f0, wave_phases): the class record's wave fields."""
        return (self.wave_den, self.wave_freqs, self.wave_f0, self.wave_phases)

    def canonical(self) -> "QuantClass":
        """This class as the writer stores it: without waves (wave_den 0) the other wave
        fields have no effect and are written as wave_freqs 1, wave_f0 0, wave_phases 1."""
        if self.wave_den or (self.wave_freqs, self.wave_f0, self.wave_phases) == (1, 0, 1):
            return self
        return replace(self, wave_freqs=1, wave_f0=0, wave_phases=1)

    def problem(self) -> str | None:
        """What makes this class unrepresentable in a file (one line), or None."""
        for name, val in zip(PARAM_RANGES, self.astuple(), strict=True):
            lo, hi = PARAM_RANGES[name]
            if not lo <= int(val) <= hi:
                return f"{name} = {val} outside {lo}..{hi}"
        lo, hi = AREA_LO_RANGE
        if not lo <= self.area_lo <= hi:
            return f"area_lo = {self.area_lo} outside {lo}..{hi}"
        if not 1 <= self.buckets <= MAX_BUCKETS:
            return f"{self.buckets} colour buckets outside 1..{MAX_BUCKETS}"
        lo, hi = PARAM_RANGES["color_den"]
        for d in self.color_dens:
            if not lo <= int(d) <= hi:
                return f"colour denominator {d} outside {lo}..{hi}"
        lo, hi = ROT_BIAS_RANGE
        if not lo <= self.rot_bias <= hi:
            return f"rot_bias = {self.rot_bias} outside {lo}..{hi}"
        for name, val in zip(WAVE_RANGES, self.wave_steps(), strict=True):
            lo, hi = WAVE_RANGES[name]
            if not lo <= int(val) <= hi:
                return f"{name} = {val} outside {lo}..{hi}"
        return None

    def angle_levels(self, log_scale) -> np.ndarray:
        """Angle levels L (int64 [N], 1..rot_levels) of Gaussians with integer log-scales
        [N, 2] (major, minor) in this class's units; spec section 3.2:
        x = rot_bias + ilog4(a) + floor((major + minor) / s) + floor(2 max(0, a - s) / s)
        with a = major - minor, s = scale_steps; L = 1 for a = 0 or x < 0, else
        ((4 + x mod 4) << x // 4) >> 2 capped at rot_levels (quarter-octave steps)."""
        ls = np.asarray(log_scale, dtype=np.int64).reshape(-1, 2)
        return angle_levels_array(np, ls[:, 0], ls[:, 1], self.scale_steps,
                                  self.rot_levels, self.rot_bias)

    def bucket(self, log_scale) -> np.ndarray:
        """Colour bucket (int64 [N]) of Gaussians with integer log-scales [N, 2] (major,
        minor) in this class's units: clamp(floor((major + minor) / scale_steps) - area_lo,
        0, B - 1)."""
        ls = np.asarray(log_scale, dtype=np.int64).reshape(-1, 2)
        octave = np.floor_divide(ls[:, 0] + ls[:, 1], self.scale_steps)
        return np.clip(octave - self.area_lo, 0, self.buckets - 1)


def angle_levels_array(xp, major, minor, s, rot_levels, rot_bias):
    """QuantClass.angle_levels on int64 arrays of numpy or torch (`xp`); s, rot_levels and
    rot_bias are ints or int64 arrays of the same length (per-Gaussian class values)."""
    a = major - minor
    ilog4 = ILOG4 if xp is np else xp.as_tensor(ILOG4, device=a.device)
    x = (rot_bias + ilog4[xp.clip(a, 0, MAX_ANISO)] + xp.floor_divide(major + minor, s)
         + xp.floor_divide(2 * xp.clip(a - s, 0, None), s))
    xc = xp.clip(x, 0, 52)       # x >= 52 gives >= 8192 levels: capped at rot_levels anyway
    levels = xp.minimum(((4 + (xc & 3)) << (xc >> 2)) >> 2, rot_levels)
    return xp.where((a > 0) & (x >= 0), levels, xp.ones_like(a))


def angle_levels(classes, cls, log_scale) -> np.ndarray:
    """int64 [N]: the angle levels of Gaussians of classes `cls` (index into `classes`,
    int [N]) with integer log-scales [N, 2] (`QuantClass.angle_levels`)."""
    cls = np.asarray(cls, dtype=np.int64)
    if not cls.size:
        return np.zeros(0, np.int64)
    ls = np.asarray(log_scale, dtype=np.int64).reshape(-1, 2)
    table = np.array([(k.scale_steps, k.rot_levels, k.rot_bias) for k in classes], np.int64)
    return angle_levels_array(np, ls[:, 0], ls[:, 1], *table[cls].T)


def color_dens(classes, cls, log_scale) -> np.ndarray:
    """int64 [N]: the colour denominator of Gaussians of classes `cls` (index into
    `classes`, int [N]) with integer log-scales [N, 2]: their class's, by their bucket."""
    cls = np.asarray(cls)
    den = np.zeros(cls.shape[0], np.int64)
    for k, qc in enumerate(classes):
        sel = cls == k
        if np.any(sel):
            den[sel] = np.array(qc.dens(), np.int64)[qc.bucket(np.asarray(log_scale)[sel])]
    return den


class QuantizedGaussians:
    """N Gaussians as integers. Each Gaussian belongs to a class (`cls[i]` indexes
    `classes`); a class fixes the quantization steps of its members, so the integers of
    Gaussian i are in the units of classes[cls[i]]. A single-class set can be built with
    the four step parameters as before (pos_bits, scale_steps, rot_levels, color_den).
    `wave` (format v5; None: no Gaussian has a wave) holds each Gaussian's wave integers."""

    def __init__(self, width: int, height: int, channels: int, pos, scale, rot, color,
                 pos_bits: int = DEFAULT_POS_BITS, scale_steps: int = DEFAULT_SCALE_STEPS,
                 rot_levels: int = DEFAULT_ROT_LEVELS, color_den: int = DEFAULT_COLOR_DEN,
                 masked: bool = False, extra: dict | None = None, *,
                 classes: tuple | None = None, cls=None, wave=None):
        self.width, self.height, self.channels = int(width), int(height), int(channels)
        # The attributes carry the format's names (format.ATTRIBUTES; the fitter's float
        # GaussianParams uses the same).
        self.pos = np.asarray(pos)      # int32 [N, 2], in [0, W << pos_bits] x [0, H << pos_bits]
        self.scale = np.asarray(scale)  # int32 [N, 2], log-scales (major, minor), major >= minor
        self.rot = np.asarray(rot)      # int32 [N], angle index in [0, angle levels)
        self.color = np.asarray(color)  # int32 [N, C], in [COLOR_RANGE * den] (`color_dens`)
        if classes is None:
            classes = (QuantClass(int(pos_bits), int(scale_steps), int(rot_levels),
                                  int(color_den)),)
        self.classes = tuple(classes)
        n = self.pos.shape[0] if self.pos.ndim else 0
        self.cls = np.zeros(n, np.int32) if cls is None else np.asarray(cls, dtype=np.int32)
        # int32 [N, 4], the WAVE_PARTS (amp, axis, freq, phase) in the units of the class:
        # amp in [0, 4 wave_den] (0: no wave), axis 0 or 1, freq < wave_freqs, phase <
        # wave_phases
        self.wave = np.zeros((n, len(WAVE_PARTS)), np.int32) if wave is None \
            else np.asarray(wave)
        self.masked = bool(masked)                # fitted under an inpainting mask (informational)
        self.extra = dict(extra or {})

    @property
    def count(self) -> int:
        return int(self.pos.shape[0])

    def _single(self, name: str) -> int:
        if len(self.classes) != 1:
            raise ValueError(f"{name} differs between classes; use .classes")
        return getattr(self.classes[0], name)

    pos_bits = property(lambda self: self._single("pos_bits"))
    scale_steps = property(lambda self: self._single("scale_steps"))
    rot_levels = property(lambda self: self._single("rot_levels"))
    color_den = property(lambda self: self._single("color_den"))

    def per_gaussian(self, name: str) -> np.ndarray:
        """int64 [N]: the step parameter `name` of each Gaussian's class."""
        table = np.array([getattr(k, name) for k in self.classes], dtype=np.int64)
        return table[self.cls] if self.count else np.zeros(0, np.int64)

    def color_dens(self) -> np.ndarray:
        """int64 [N]: each Gaussian's colour denominator (its class, then its bucket)."""
        return color_dens(self.classes, self.cls, self.scale)

    def angle_levels(self) -> np.ndarray:
        """int64 [N]: each Gaussian's number of angle levels (its class, then its shape)."""
        return angle_levels(self.classes, self.cls, self.scale)

    def has_waves(self) -> bool:
        """Whether any Gaussian has a wave (a non-zero amplitude)."""
        return bool(self.count and np.any(self.wave[:, 0] != 0))

    def class_counts(self) -> list[int]:
        return np.bincount(self.cls, minlength=len(self.classes)).tolist() if self.count \
            else [0] * len(self.classes)

    # ---- ranges -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError if any field is outside the ranges the format allows."""
        n, c = self.count, self.channels
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{MAX_SIDE}")
        if c not in CHANNEL_COUNTS:
            raise ValueError(f"channel count {c} not one of {CHANNEL_COUNTS}")
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            raise ValueError(f"{len(self.classes)} classes; the format allows 1..{MAX_CLASSES}")
        shapes = {"pos": (n, 2), "scale": (n, 2), "rot": (n,), "color": (n, c), "cls": (n,),
                  "wave": (n, len(WAVE_PARTS))}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
        if not n:
            return
        if self.cls.min() < 0 or self.cls.max() >= len(self.classes):
            raise ValueError("class index out of range")
        pb = self.per_gaussian("pos_bits")
        ss = self.per_gaussian("scale_steps")
        for qc in self.classes:
            if qc.problem():
                raise ValueError(qc.problem())
        xy = self.pos.astype(np.int64)
        if xy.min() < 0 or np.any(xy[:, 0] > self.width << pb) \
                or np.any(xy[:, 1] > self.height << pb):
            raise ValueError("position outside the image")
        ls = self.scale.astype(np.int64)
        if (np.any(ls < (LOG2_SIGMA_MIN * ss)[:, None])
                or np.any(ls > (LOG2_SIGMA_MAX * ss)[:, None])):
            raise ValueError("log-scale outside the allowed range")
        if np.any(ls[:, 0] < ls[:, 1]):
            raise ValueError("minor scale larger than major scale")
        # (a Gaussian with one angle level may carry any index below rot_levels: its
        # rotation is not stored, `sorted` sets it to 0)
        levels = self.angle_levels()
        limit = np.where(levels == 1, self.per_gaussian("rot_levels"), levels)
        if self.rot.min() < 0 or np.any(self.rot >= limit):
            raise ValueError("rotation index outside [0, angle levels)")
        col = self.color.astype(np.int64)
        den = self.color_dens()
        if (np.any(col < (COLOR_RANGE[0] * den)[:, None])
                or np.any(col > (COLOR_RANGE[1] * den)[:, None])):
            raise ValueError("colour outside the allowed range")
        self._validate_waves()

    def _validate_waves(self) -> None:
        """The wave integers within their class's ranges (a Gaussian without a wave may
        carry any axis, freq and phase in range: `sorted` sets them to 0)."""
        amp, axis, freq, phase = (self.wave[:, j].astype(np.int64) for j in range(4))
        if amp.min() < 0 or np.any(amp > WAVE_AMP_MAX * self.per_gaussian("wave_den")):
            raise ValueError(f"wave amplitude outside 0..{WAVE_AMP_MAX} * wave_den")
        if axis.min() < 0 or axis.max() > 1:
            raise ValueError("wave axis not 0 or 1")
        if freq.min() < 0 or np.any(freq >= self.per_gaussian("wave_freqs")):
            raise ValueError("wave frequency level outside [0, wave_freqs)")
        if phase.min() < 0 or np.any(phase >= self.per_gaussian("wave_phases")):
            raise ValueError("wave phase level outside [0, wave_phases)")

    # ---- canonical order ----------------------------------------------------------------
    def canonical_order(self) -> np.ndarray:
        """Permutation that sorts the Gaussians as the file stores them: by class, then by
        the Morton code of the quantized position, ties broken by the remaining integers
        in field order (the wave's parts last)."""
        keys = [self.wave[:, k] for k in range(len(WAVE_PARTS) - 1, -1, -1)]
        keys += [self.color[:, k] for k in range(self.channels - 1, -1, -1)]
        keys += [self.rot, self.scale[:, 1], self.scale[:, 0]]
        keys.append(morton_code(self.pos[:, 0], self.pos[:, 1]))
        keys.append(self.cls)
        return np.lexsort(keys)

    def sorted(self) -> "QuantizedGaussians":
        """The canonical form: file order, rotation 0 for Gaussians with one angle level
        (whose rotation the format does not store: isotropic ones, for which it changes
        nothing, and nearly round ones), axis, freq and phase 0 for Gaussians without a
        wave (not stored either), and the classes' canonical wave fields."""
        rot = np.where(self.angle_levels() == 1, 0, self.rot) if self.count else self.rot
        wave = np.where(self.wave[:, :1] == 0, 0, self.wave).astype(np.int32)
        q = QuantizedGaussians(self.width, self.height, self.channels, self.pos, self.scale,
                               rot.astype(np.int32), self.color, masked=self.masked,
                               extra=self.extra, classes=self.classes, cls=self.cls, wave=wave)
        order = q.canonical_order()
        return QuantizedGaussians(
            self.width, self.height, self.channels, q.pos[order], q.scale[order],
            q.rot[order], q.color[order], masked=self.masked, extra=dict(self.extra),
            classes=tuple(k.canonical() for k in self.classes), cls=q.cls[order],
            wave=q.wave[order])

    def __repr__(self) -> str:
        return (f"QuantizedGaussians({self.width}x{self.height}x{self.channels}, "
                f"N={self.count}, classes={self.classes}, masked={self.masked})")

    # ---- dequantization -----------------------------------------------------------------
    def dequantize(self):
        """Return float64 arrays (means [N,2], sigma [N,2] (major, minor), theta [N],
        colors [N,C]) exactly as spec/gsi-format.md defines them."""
        pb = np.exp2(self.per_gaussian("pos_bits").astype(np.float64))[:, None]
        means = self.pos.astype(np.float64) / pb
        ss = self.per_gaussian("scale_steps").astype(np.float64)[:, None]
        sigma = np.exp2(self.scale.astype(np.float64) / ss)
        theta = np.pi * self.rot.astype(np.float64) / self.angle_levels()
        colors = self.color.astype(np.float64) / self.color_dens()[:, None]
        return means, sigma, theta, colors

    def conics(self) -> np.ndarray:
        """Inverse covariances (a, b, c) with Sigma^-1 = [[a, b], [b, c]], float64 [N, 3]."""
        _, sigma, theta, _ = self.dequantize()
        return conics_from_scale_rot(sigma, theta)

    def render_inputs(self):
        """(means [N,2], conics [N,3], colors [N,C]) as contiguous float32 arrays for the
        renderer: computed in float64 (`dequantize`, `conics`) and rounded once."""
        means, sigma, theta, colors = self.dequantize()
        conics = conics_from_scale_rot(sigma, theta)
        return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (means, conics, colors))

    def wave_vectors(self) -> np.ndarray:
        """float64 [N, 4]: each Gaussian's wave (kx, ky, phase, amp) as spec/gsi-format.md
        section 9 defines it; (0, 0, 0, 0) for a Gaussian without a wave. The wave runs
        along the major axis u = (cos theta, sin theta) (axis 0) or the minor axis
        u = (-sin theta, cos theta) (axis 1) with omega = 2^((wave_f0 + freq) / 2) radians
        per standard deviation along that axis: k = (omega / sigma_axis) * u radians per
        pixel; phase = 2 pi phase / wave_phases; amp = amp / wave_den."""
        out = np.zeros((self.count, 4), np.float64)
        amp, axis, freq, phase = (self.wave[:, j].astype(np.int64) for j in range(4))
        on = amp > 0
        if not np.any(on):
            return out
        _, sigma, theta, _ = self.dequantize()
        f0 = self.per_gaussian("wave_f0")[on]
        omega = np.exp2((f0 + freq[on]) / 2.0)
        minor = axis[on] == 1
        sig = np.where(minor, sigma[on, 1], sigma[on, 0])
        cos, sin = np.cos(theta[on]), np.sin(theta[on])
        mag = omega / sig
        out[on, 0] = mag * np.where(minor, -sin, cos)
        out[on, 1] = mag * np.where(minor, cos, sin)
        out[on, 2] = 2.0 * np.pi * phase[on] / self.per_gaussian("wave_phases")[on]
        out[on, 3] = amp[on] / self.per_gaussian("wave_den")[on]
        return out

    def render_waves(self) -> np.ndarray | None:
        """The renderer's waves [N, 4] (kx, ky, phase, amp), `wave_vectors` rounded once to
        contiguous float32, or None when no Gaussian has a wave (the renderers then draw
        plain Gaussians, on any backend)."""
        if not self.has_waves():
            return None
        return np.ascontiguousarray(self.wave_vectors(), dtype=np.float32)


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
