"""Float Gaussians <-> the integers of a .gsi file.

The fitter works on `GaussianParams` (positions in pixels, log2 of the two standard
deviations, a rotation angle, colours). `fake_quantize` rounds them exactly as the writer
will, with a straight-through gradient, so the quantization-aware phase optimises what
the decoder will see. `to_integers` produces the `QuantizedGaussians` that is written;
the way back, integers to the renderer's floats, is `QuantizedGaussians.render_inputs`
(shared with the decoder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..bitstream.model import (
    AREA_LO_RANGE,
    COLOR_RANGE,
    ILOG4,
    LOG2_SIGMA_MAX,
    LOG2_SIGMA_MIN,
    PARAM_RANGES,
    ROT_BIAS_RANGE,
    QuantClass,
    QuantizedGaussians,
    angle_levels,
    angle_levels_array,
    color_dens,
    conics_from_scale_rot,
)
from .init import structure_maps
from .params import (
    WAVE_AMP,
    WAVE_AXIS,
    WAVE_LOGFREQ,
    WAVE_ON,
    WAVE_PHASE,
    GaussianParams,
    wave_vectors,
)

# The encoder's steps: the format's defaults, but positions in half pixels, log2 sigma
# in 1/6 octave and up to 512 angle levels. Once positions are rounded in each Gaussian's
# own metric (`snap_positions`), half pixels beat quarter pixels, and then 1/6 octave beat
# 1/8 (with the colour step below; 1/8 had beaten 1/16, 1/6 and 1/4 before: Quantization,
# 2026-12-01 (eleventh session) 17b389a and 2026-12-06 (sixth session)); the cap of 512
# levels binds only the thinnest Gaussians (with ROT_X0 7: Quantization, seventh session).
ENCODER_CLASS = QuantClass(pos_bits=1, scale_steps=6, rot_levels=512)

# The steps follow the fitted set (`QuantConfig.for_fit`; Quantization, 2026-11-30 (fifth
# session) 5b1fdad, and the entries named below):
# - dense sets get one more position bit: small Gaussians need finer positions;
FINE_POS_DENSITY = 16.0          # Gaussians per 1000 pixels
MAX_POS_BITS = PARAM_RANGES["pos_bits"][1]   # the format's limit
# - the colour step follows the fit's error: the better the fit, the finer the step (it
#   halves about every 6 dB above COLOR_REF_PSNR and every 12 dB below; 32.5 dB until
#   positions snapped, then 1.12-1.26x coarser steps paid: Quantization, 2026-12-06
#   (sixth session));
COLOR_REF_PSNR = 34.5            # the fit's PSNR at which the class's own step is kept
COLOR_DEN_LIMITS = (16, 1024)
# - colour steps by size (format v3 buckets): a colour error spreads over the Gaussian's
#   footprint, so the best step shrinks with the square root of its area; buckets of one
#   octave of area around the set's median, one per COLOR_BUCKET_MIN Gaussians since each
#   costs its own tables (Quantization, 2026-12-01 (sixth session));
COLOR_BUCKETS = 6
COLOR_BUCKET_SCALE = 0.5
COLOR_BUCKET_MIN = 150
# - angle steps by shape and size (format v4 rot_bias): the levels grow with a Gaussian's
#   anisotropy and area, from rot_bias = ROT_X0 - the set's median area octave (8 or 9 best
#   of 6 to 9 under a cap of 128 levels: Quantization, 2026-12-01 (twelfth session) fdc5abf;
#   7 under the cap of 512: 2026-12-06 (seventh session)).
ROT_X0 = 7
# - waves (format v5): amplitude in 1/WAVE_DEN (at most WAVE_AMP_MAX, the format's limit),
#   WAVE_FREQS frequencies a half octave apart from 2^(WAVE_F0 / 2) radians per sigma,
#   WAVE_PHASES phases (Primitives, 2026-12-05: 8 / 8 / 8 lost 0.1-0.3 dB against float
#   waves on crops, coarser grids lost more).
WAVE_DEN = 8
WAVE_AMP_MAX = 4.0
WAVE_FREQS = 8
WAVE_F0 = -2
WAVE_PHASES = 8


def color_factor(psnr: float) -> float:
    """How much finer than its class's step the colour step of a fit at `psnr` dB is."""
    slope = 20.0 if psnr >= COLOR_REF_PSNR else 40.0
    return 10.0 ** ((min(psnr, 60.0) - COLOR_REF_PSNR) / slope)


@dataclass(frozen=True)
class QuantConfig:
    """The quantization classes an encode uses: `classes[k]` holds the steps of class k.
    Which Gaussian goes to which class is decided by `assign_classes` (the rule lives with
    the encoder, the steps and the assignment are written in the file). With
    `pos_by_density` / `color_by_quality` the position / colour steps follow the fitted
    set (`for_fit`)."""
    classes: tuple = (ENCODER_CLASS,)
    pos_by_density: bool = True
    color_by_quality: bool = True
    color_by_size: bool = True
    rot_by_shape: bool = True

    @staticmethod
    def single(pos_bits=None, scale_steps=None, rot_levels=None, color_den=None) -> "QuantConfig":
        """One class; the steps not given are the encoder's (positions and colours then
        follow the fit, unless pos_bits / color_den are given)."""
        d = ENCODER_CLASS
        return QuantConfig((QuantClass(
            d.pos_bits if pos_bits is None else pos_bits,
            d.scale_steps if scale_steps is None else scale_steps,
            d.rot_levels if rot_levels is None else rot_levels,
            d.color_den if color_den is None else color_den),),
            pos_by_density=pos_bits is None, color_by_quality=color_den is None,
            color_by_size=color_den is None, rot_by_shape=rot_levels is None)

    def for_fit(self, count: int, pixels: int, psnr: float, area_octave: int = 0,
                waves: bool = False) -> "QuantConfig":
        """The steps for `count` Gaussians fitted to `pixels` pixels at `psnr` dB, whose
        median area sigma_major*sigma_minor is 2^area_octave: one more position bit from
        FINE_POS_DENSITY Gaussians per 1000 pixels (pos_by_density), colour steps scaled by
        `color_factor(psnr)` (color_by_quality) and split into up to COLOR_BUCKETS buckets
        by size (color_by_size: one per COLOR_BUCKET_MIN Gaussians), angle levels by shape
        and size around the median area (rot_by_shape), in every class; with `waves`, the
        wave steps (WAVE_DEN, WAVE_FREQS, WAVE_F0, WAVE_PHASES) in every class."""
        dense = self.pos_by_density and count * 1000 >= FINE_POS_DENSITY * pixels
        factor = color_factor(psnr) if self.color_by_quality else 1.0
        lo, hi = COLOR_DEN_LIMITS
        classes = []
        for k in self.classes:
            den = min(max(round(k.color_den * factor), lo), hi)
            k = replace(k, pos_bits=min(k.pos_bits + int(dense), MAX_POS_BITS), color_den=den)
            if self.rot_by_shape:
                bias = ROT_X0 - (int(ILOG4[k.scale_steps]) - int(ILOG4[8])) - int(area_octave)
                k = replace(k, rot_bias=min(max(bias, ROT_BIAS_RANGE[0]), ROT_BIAS_RANGE[1]))
            nb = min(COLOR_BUCKETS, count // COLOR_BUCKET_MIN)
            if self.color_by_size and nb > 1:
                mid = (nb - 1) / 2
                dens = [max(1, round(den * COLOR_BUCKET_SCALE * 2.0 ** (0.5 * (b - mid))))
                        for b in range(nb)]
                a_lo, a_hi = AREA_LO_RANGE
                k = replace(k, color_den=dens[0], color_dens=tuple(dens[1:]),
                            area_lo=min(max(int(area_octave) - nb // 2, a_lo), a_hi))
            if waves:
                k = replace(k, wave_den=WAVE_DEN, wave_freqs=WAVE_FREQS, wave_f0=WAVE_F0,
                            wave_phases=WAVE_PHASES)
            classes.append(k)
        classes = tuple(classes)
        if classes == self.classes:
            return self
        return QuantConfig(classes, pos_by_density=False, color_by_quality=False,
                           color_by_size=False, rot_by_shape=False)

    def steps(self, cls, device="cpu"):
        """Per-Gaussian geometry steps (pos scale 2^pos_bits, scale_steps, rot_levels) as
        float32 [N] for class indices cls (LongTensor [N] or None = class 0). The colour
        step depends on the size too: `color_dens`."""
        t = torch.tensor([[float(1 << k.pos_bits), k.scale_steps, k.rot_levels]
                          for k in self.classes], dtype=torch.float32, device=device)
        if cls is None:
            return t[0]
        return t[cls].unbind(-1)

    def wave_steps(self, cls: torch.Tensor, device="cpu"):
        """Per-Gaussian (wave_den, wave_freqs, wave_f0, wave_phases) as float32 [N] each."""
        t = torch.tensor([[k.wave_den, k.wave_freqs, k.wave_f0, k.wave_phases]
                          for k in self.classes], dtype=torch.float32, device=device)
        return t[cls].unbind(-1)

    def color_dens(self, cls: torch.Tensor, log_scale_int: torch.Tensor) -> torch.Tensor:
        """float32 [N]: each Gaussian's colour denominator from its class (LongTensor [N])
        and its integer log-scales ([N, 2], major and minor in its class's units), as
        `QuantClass.bucket` defines the bucket."""
        dev = log_scale_int.device
        nb = max(k.buckets for k in self.classes)
        dens = torch.tensor([list(k.dens()) + [k.dens()[-1]] * (nb - k.buckets)
                             for k in self.classes], dtype=torch.float32, device=dev)
        meta = torch.tensor([[k.scale_steps, k.area_lo, k.buckets] for k in self.classes],
                            dtype=torch.long, device=dev)[cls]
        octave = torch.div(log_scale_int.long().sum(-1), meta[:, 0], rounding_mode="floor")
        b = torch.minimum(torch.clamp(octave - meta[:, 1], min=0), meta[:, 2] - 1)
        return dens[cls, b]

    def angle_levels(self, cls: torch.Tensor, log_scale_int: torch.Tensor) -> torch.Tensor:
        """LongTensor [N]: each Gaussian's angle levels from its class (LongTensor [N]) and
        its integer log-scales ([N, 2]), as `QuantClass.angle_levels` defines them."""
        ls = log_scale_int.long()
        t = torch.tensor([[k.scale_steps, k.rot_levels, k.rot_bias] for k in self.classes],
                         dtype=torch.long, device=ls.device)[cls]
        return angle_levels_array(torch, ls[:, 0], ls[:, 1], t[:, 0], t[:, 1], t[:, 2])


def canonicalize(p: GaussianParams) -> GaussianParams:
    """Same Gaussians with the first axis the major one and theta in [0, pi); waves with
    amp >= 0, phase in [0, 2 pi) and their axis label following the swap (the same wave
    vector up to its sign, which the phase absorbs)."""
    with torch.no_grad():
        ls = p.scale.clone()
        theta = p.rot.clone()
        swap = ls[:, 1] > ls[:, 0]
        ls[swap] = ls[swap].flip(-1)
        theta = torch.where(swap, theta + math.pi / 2, theta)
        theta = torch.remainder(theta, math.pi)
        wave = None
        if p.wave is not None:
            wave = p.wave.detach().clone()
            before = wave_vectors(p.scale, p.rot, p.wave)[:, :2]
            wave[:, WAVE_AXIS] = torch.where(swap, 1.0 - wave[:, WAVE_AXIS], wave[:, WAVE_AXIS])
            after = wave_vectors(ls, theta, wave)[:, :2]
            flip = (before * after).sum(-1) < 0          # k -> -k: cos(-x + f) = cos(x - f)
            phase = torch.where(flip, -wave[:, WAVE_PHASE], wave[:, WAVE_PHASE])
            neg = wave[:, WAVE_AMP] < 0                  # -a cos(x) = a cos(x + pi)
            phase = torch.where(neg, phase + math.pi, phase)
            wave[:, WAVE_AMP] = wave[:, WAVE_AMP].abs()
            wave[:, WAVE_PHASE] = torch.remainder(phase, 2 * math.pi)
    out = GaussianParams(p.pos.detach().clone(), ls, theta, p.color.detach().clone())
    out.wave = wave
    return out


def snap_positions(p: GaussianParams, cfg: QuantConfig, width: int, height: int,
                   cls: torch.Tensor | None = None) -> torch.Tensor:
    """p's positions on their class's grid, each at the grid point nearest in the
    Gaussian's own metric, d^T Sigma^-1 d for a move d, among the 4 x 4 points around it
    (its grid cell's corners and their neighbours), within [0, W] x [0, H]. Nearest
    rounding of x and y treats every direction alike, but moving a thin Gaussian along its
    major axis changes the image little, across it much: with a converged fit the squared
    error grows as |c|^2 (pi / 2) sigma1 sigma2 d^T Sigma^-1 d (its Gauss-Newton term in
    closed form), so this point costs least. A position already on the grid stays."""
    if cls is None:
        cls = torch.zeros(p.count, dtype=torch.long, device=p.pos.device)
    with torch.no_grad():
        step = cfg.steps(cls, p.pos.device)[0][:, None, None]            # [N,1,1] per pixel
        pos = p.pos.detach()
        lim = torch.tensor([width, height], dtype=pos.dtype, device=pos.device)
        off = torch.arange(-1, 3, dtype=pos.dtype, device=pos.device)
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        grid = torch.stack([ox.flatten(), oy.flatten()], -1)               # [16,2]
        cand = (torch.floor(pos * step[:, 0])[:, None, :] + grid) / step
        cand = torch.minimum(torch.clamp(cand, min=0.0), lim)
        d = cand - pos[:, None, :]
        a, b, c = conics_from_scale_rot(torch.exp2(p.scale.detach()),
                                        p.rot.detach())[:, :, None].unbind(1)
        cost = a * d[..., 0] ** 2 + 2 * b * d[..., 0] * d[..., 1] + c * d[..., 1] ** 2
        best = cost.argmin(1)
        return cand[torch.arange(p.count, device=pos.device), best]


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quantize(p: GaussianParams, cfg: QuantConfig, width: int, height: int,
                  cls: torch.Tensor | None = None) -> GaussianParams:
    """Round every attribute to the grid the file uses (straight-through gradients), each
    Gaussian with the steps of its class (cls: LongTensor [N]; None = all class 0).
    Expects canonical parameters (see `canonicalize`); the minor axis is capped at the
    major one as the format requires."""
    if cls is None:
        cls = torch.zeros(p.count, dtype=torch.long, device=p.pos.device)
    ps, ss, _ = cfg.steps(cls, p.pos.device)
    lim = torch.tensor([width, height], dtype=p.pos.dtype, device=p.pos.device)
    xy = _ste_round(torch.minimum(torch.clamp(p.pos, min=0.0), lim) * ps[:, None]) / ps[:, None]
    lo, hi = LOG2_SIGMA_MIN, LOG2_SIGMA_MAX
    ls_int = _ste_round(torch.clamp(p.scale, lo, hi) * ss[:, None])
    ls_int = torch.stack([ls_int[:, 0], torch.minimum(ls_int[:, 1], ls_int[:, 0])], -1)
    ls = ls_int / ss[:, None]
    den = cfg.color_dens(cls, ls_int.detach())      # the colour step follows the size
    rl = cfg.angle_levels(cls, ls_int.detach()).to(p.rot.dtype)   # and the angle step
    th = _ste_round(p.rot * (rl / math.pi)) * (math.pi / rl)
    clo, chi = COLOR_RANGE
    col = _ste_round(torch.clamp(p.color, clo, chi) * den[:, None]) / den[:, None]
    wave = None if p.wave is None else _fake_quantize_waves(p.wave, cfg, cls)
    return GaussianParams(xy, ls, th, col, wave)


def _fake_quantize_waves(wave: torch.Tensor, cfg: "QuantConfig", cls: torch.Tensor
                         ) -> torch.Tensor:
    """Waves (canonical: amp >= 0, phase in [0, 2 pi)) on their class's grid
    (straight-through): amp in 1/wave_den up to WAVE_AMP_MAX, log2 frequency in half
    octaves from wave_f0 / 2 (wave_freqs levels), phase in 2 pi / wave_phases."""
    den, nf, f0, nph = cfg.wave_steps(cls, wave.device)
    amp = _ste_round(torch.clamp(wave[:, WAVE_AMP], 0.0, WAVE_AMP_MAX) * den) / den
    amp = torch.where(den > 0, amp, torch.zeros_like(amp))
    level = torch.clamp(2.0 * wave[:, WAVE_LOGFREQ] - f0, min=0.0)
    level = torch.minimum(level, nf - 1)
    logf = (_ste_round(level) + f0) / 2.0
    phase = _ste_round(wave[:, WAVE_PHASE] * (nph / (2 * math.pi))) * (2 * math.pi / nph)
    amp = amp * wave[:, WAVE_ON]
    return torch.stack([amp, logf, phase, wave[:, WAVE_AXIS], wave[:, WAVE_ON]], -1)


def to_integers(p: GaussianParams, cfg: QuantConfig, width: int, height: int,
                masked: bool = False, cls=None) -> QuantizedGaussians:
    """The integers of p, each Gaussian in its class's units (cls: int array [N] or None
    = all class 0), in canonical order."""
    p = canonicalize(p)
    with torch.no_grad():
        xy = p.pos.double().cpu().numpy()
        ls = p.scale.double().cpu().numpy()
        th = p.rot.double().cpu().numpy()
        col = p.color.double().cpu().numpy()
    n = xy.shape[0]
    cls = np.zeros(n, np.int64) if cls is None else np.asarray(cls, np.int64)
    table = np.array([k.astuple() for k in cfg.classes], dtype=np.int64).reshape(-1, 4)
    pb, ss = (table[cls, i] for i in range(2))
    ps = (1 << pb).astype(np.float64)
    qxy = np.rint(xy * ps[:, None]).astype(np.int64)
    qxy[:, 0] = np.clip(qxy[:, 0], 0, width * ps.astype(np.int64))
    qxy[:, 1] = np.clip(qxy[:, 1], 0, height * ps.astype(np.int64))
    lo, hi = (LOG2_SIGMA_MIN * ss)[:, None], (LOG2_SIGMA_MAX * ss)[:, None]
    qls = np.clip(np.rint(ls * ss[:, None]), lo, hi).astype(np.int64)
    qls[:, 1] = np.minimum(qls[:, 1], qls[:, 0])
    rl = angle_levels(cfg.classes, cls, qls)   # the angle levels of each Gaussian's shape
    level = np.rint(th * (rl / math.pi))
    qrot = np.mod(level, rl).astype(np.int64)
    den = color_dens(cfg.classes, cls, qls)     # the colour step of each Gaussian's bucket
    clo, chi = (COLOR_RANGE[0] * den)[:, None], (COLOR_RANGE[1] * den)[:, None]
    qcol = np.clip(np.rint(col * den[:, None]), clo, chi).astype(np.int64)
    # An angle that rounds up to pi is written as 0: the same Gaussian, but its wave's
    # direction turns round, so the phase changes sign to draw the same wave.
    qwave = None if p.wave is None else _wave_integers(p.wave, cfg, cls, level >= rl)
    qg = QuantizedGaussians(
        width, height, col.shape[1], qxy.astype(np.int32), qls.astype(np.int32),
        qrot.astype(np.int32), qcol.astype(np.int32), masked=masked,
        classes=tuple(cfg.classes), cls=cls.astype(np.int32),
        **({} if qwave is None else {"wave": qwave}))
    qg.validate()
    return qg.sorted()


def _wave_integers(wave: torch.Tensor, cfg: QuantConfig, cls: np.ndarray,
                   turned: np.ndarray) -> np.ndarray:
    """int32 [N, 4]: (amp, axis, frequency level, phase level) of canonical waves, each in
    its class's units; a Gaussian whose amplitude rounds to 0 (or whose class has no
    waves) gets (0, 0, 0, 0). `turned`: the Gaussians whose angle is written half a turn
    from the fitted one (cos(-k.d + phase) = cos(k.d - phase))."""
    w = wave.detach().double().cpu().numpy()
    table = np.array([[k.wave_den, k.wave_freqs, k.wave_f0, k.wave_phases]
                      for k in cfg.classes], dtype=np.int64).reshape(-1, 4)
    den, nf, f0, nph = (table[cls, i] for i in range(4))
    amp = np.clip(np.rint(w[:, WAVE_AMP] * w[:, WAVE_ON] * den), 0, np.rint(WAVE_AMP_MAX * den))
    freq = np.clip(np.rint(2.0 * w[:, WAVE_LOGFREQ] - f0), 0, np.maximum(nf - 1, 0))
    phase = np.rint(w[:, WAVE_PHASE] * nph / (2 * math.pi))
    phase = np.mod(np.where(turned, -phase, phase), np.maximum(nph, 1))
    axis = (w[:, WAVE_AXIS] > 0.5).astype(np.int64)
    out = np.stack([amp, axis, freq, phase], -1).astype(np.int64)
    out[amp == 0] = 0
    return out.astype(np.int32)


def render_inputs(qg, device="cpu"):
    """(means, conics, colors) float32 tensors on `device` from decoded integers (either
    profile): the decoder's own numpy conversion, `qg.render_inputs()`, wrapped."""
    return tuple(torch.from_numpy(a).to(device) for a in qg.render_inputs())


# ---- adaptive classes ---------------------------------------------------------------------
# Two-class preset: class 0 keeps the default steps (small Gaussians, detailed regions);
# class 1 ("smooth": large Gaussians in flat regions) has coarser steps. Which steps are
# coarser was measured per attribute on fitted Kodak images (docs/experiments.md).
SMOOTH_CLASS = QuantClass(pos_bits=1, scale_steps=16, rot_levels=128, color_den=64)
SMOOTH_SHARE = 0.33          # share of the Gaussians put in the smooth class


def adaptive_config(smooth: QuantClass = SMOOTH_CLASS) -> QuantConfig:
    return QuantConfig((QuantClass(), smooth))


def assign_classes(p: GaussianParams, cfg: QuantConfig, target: torch.Tensor,
                   known: torch.Tensor | None = None, smooth_share: float = SMOOTH_SHARE
                   ) -> torch.Tensor:
    """Class per Gaussian for a two-class config: the `smooth_share` of the Gaussians with
    the highest score log2(size) - log2(local complexity) go to class 1. Size is the
    geometric mean of the two sigmas; complexity is the structure-tensor energy (squared
    gradient, smoothed) at the centre relative to the image mean."""
    n = p.count
    if len(cfg.classes) != 2 or n == 0:
        return torch.zeros(n, dtype=torch.long, device=p.pos.device)
    img = target if known is None else target * known[:, :, None]
    energy, _, _ = structure_maps(img)
    h, w = energy.shape
    ix = p.pos[:, 0].detach().long().clamp(0, w - 1)
    iy = p.pos[:, 1].detach().long().clamp(0, h - 1)
    rel = energy[iy, ix] / energy.mean().clamp(min=1e-12)
    score = p.scale.detach().mean(1) - torch.log2(1.0 + rel)
    k = int(round(smooth_share * n))
    cls = torch.zeros(n, dtype=torch.long, device=p.pos.device)
    if k > 0:
        cls[torch.argsort(score, descending=True)[:k]] = 1
    return cls
