"""An encode as a pipeline of named stages (`stages.py`) over one explicit state.

    free fit        Start, FreeFit                                  (`fit_stages`)
    gsi tail        Quantize, PositionChoice(RoundGeometry, Colours, Write)  (TAILS["gsi"])
    GaussianImage   GIFineTune, Write                               (TAILS["gaussianimage"])

`encode_pipeline(cfg, n, profile)` is the whole encode; rate control (`ratecontrol.py`) and
the one-fit-several-profiles encode (`api.encode_profiles`) run the same stages in their
own order. `Pipeline.run_stage` runs one stage and adds its wall time to
`state.seconds[stage.name]`: the place for a profiler to wrap (on a GPU, synchronise there
for exact times).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from ..decoder import decode
from .config import FitConfig
from .gi_finetune import GIFineTune
from .progress import Progress
from .quantize import QuantConfig
from .stages import Colours, EncodeState, FreeFit, Quantize, RoundGeometry, Start, Write
from .threads import one_thread


class Pipeline:
    """Stages run in order on one state, under one progress bar."""

    def __init__(self, stages):
        self.stages = tuple(stages)

    def steps(self, objective) -> int:
        """Adam steps of all the stages (the progress bar's length)."""
        return sum(stage.steps(objective) for stage in self.stages)

    def run(self, objective, state: EncodeState, progress: bool = False) -> EncodeState:
        bar = Progress(self.steps(objective), progress)
        try:
            for stage in self.stages:
                self.run_stage(stage, objective, state, bar)
        finally:
            bar.close()
        return state

    @staticmethod
    def run_stage(stage, objective, state: EncodeState, bar: Progress) -> None:
        t0 = time.perf_counter()
        with one_thread():     # torch's small operations at one thread, the kernel at all
            stage.run(objective, state, bar)
        state.seconds[stage.name] = (state.seconds.get(stage.name, 0.0)
                                     + time.perf_counter() - t0)


def rd_slope(density: float) -> float:
    """The codec's PSNR gain per e-fold of rate at `density` Gaussians per 1000 pixels: the
    local slopes of the Kodak curve (2.75 / 3.0 / 3.34 / 3.94 dB at 2 / 5 / 11 / 24),
    as a line in log density."""
    return 2.4 + 0.45 * math.log(max(density, 0.5))


def ms_ssim_slope(density: float) -> float:
    """The MS-SSIM gain (dB, -10 log10(1 - MS-SSIM)) per e-fold of rate of `--tune ssim` at
    `density`: the local slopes of its Kodak curve (bc1cedf: 2.9 / 3.7 / 4.4 dB between 2 /
    5 / 11 / 24), as a line in log density."""
    return 1.87 + 0.90 * math.log(max(density, 0.5))


@dataclass(frozen=True)
class PositionChoice:
    """Runs `tail` (the stages after `Quantize`: rounding, colours, write) and, where the
    file's PSNR is below cfg.coarse_pos_psnr (and, for tune ssim below
    cfg.coarse_pos_ms_ssim_density Gaussians per 1000 pixels, its MS-SSIM below
    cfg.coarse_pos_ms_ssim dB), runs it again from the same set with the
    positions one bit coarser and keeps the file that is better at equal rate: the
    difference in quality plus the slope times the log of the size ratio, quality and slope
    being PSNR and `rd_slope` for tune psnr, MS-SSIM in dB and `ms_ssim_slope` for tune ssim
    (PSNR for an image too small to have an MS-SSIM).
    Only with the position steps following the fit (cfg.quant.pos_by_density); not in rate
    control (`ratecontrol.fit_to_size`). The decision is recorded in state.coarse_pos. Its
    wall time (`Pipeline.run_stage`) includes its tail's stages, which record their own."""
    cfg: FitConfig
    tail: tuple
    name: ClassVar[str] = "position choice"

    def steps(self, objective) -> int:
        return sum(stage.steps(objective) for stage in self.tail)

    def applies(self, state) -> bool:
        cfg = self.cfg
        return (cfg.coarse_pos_psnr > 0 and cfg.quant.pos_by_density
                and state.quant is not None and all(k.pos_bits >= 1 for k in state.quant.classes))

    @staticmethod
    def coarser(quant: QuantConfig) -> QuantConfig:
        return QuantConfig(tuple(replace(k, pos_bits=k.pos_bits - 1) for k in quant.classes),
                           pos_by_density=False, color_by_quality=False, color_by_size=False,
                           rot_by_shape=False)

    def run(self, objective, state, bar: Progress) -> None:
        if not self.applies(state):
            return self._run_tail(objective, state, bar)
        alt = state.fork()
        self._run_tail(objective, state, bar)
        state.coarse_pos = False
        base = self.decoded(objective, state.data)
        base_quality = self.psnr(objective, base)
        if base_quality >= self.cfg.coarse_pos_psnr:
            return
        density = 1000.0 * state.params.count / objective.npix
        quality, slope = self.psnr, rd_slope(density)
        if self.cfg.tune == "ssim" and getattr(objective, "ms_ssim", None) is not None:
            quality, slope = self.ms_ssim_db, ms_ssim_slope(density)
            base_quality = quality(objective, base)
            if (density < self.cfg.coarse_pos_ms_ssim_density
                    and base_quality >= self.cfg.coarse_pos_ms_ssim):
                return
        alt.quant = self.coarser(alt.quant)
        self._run_tail(objective, alt, Progress(0, False))
        gain = (quality(objective, self.decoded(objective, alt.data)) - base_quality
                + slope * math.log(len(state.data) / len(alt.data)))
        if gain > 0:
            for f in ("params", "quant", "cls", "coded", "data"):
                setattr(state, f, getattr(alt, f))
            state.coarse_pos = True

    def _run_tail(self, objective, state, bar: Progress) -> None:
        for stage in self.tail:
            Pipeline.run_stage(stage, objective, state, bar)

    @staticmethod
    def decoded(objective, data: bytes) -> torch.Tensor:
        """The decoded file as an [H, W, C] float tensor in [0, 1]."""
        img = decode(data).reshape(objective.h, objective.w, -1)
        return torch.from_numpy(img.astype(np.float32) / 255.0).to(objective.device)

    @staticmethod
    def psnr(objective, img: torch.Tensor) -> float:
        """PSNR of a decoded image against the target, over the known pixels."""
        return -10.0 * math.log10(max(float(objective.mse(img)), 1e-12))

    @staticmethod
    def ms_ssim_db(objective, img: torch.Tensor) -> float:
        """MS-SSIM of a decoded image against the target (whole image, the benchmark's
        formula), in dB: -10 log10(1 - MS-SSIM)."""
        from .msssim import ms_ssim
        with torch.no_grad():
            m = float(ms_ssim(img, objective.target))
        return -10.0 * math.log10(max(1.0 - m, 1e-12))


def fit_stages(cfg: FitConfig, n: int) -> tuple:
    """The free fit of n Gaussians, common to both profiles."""
    return (Start(cfg, n), FreeFit(cfg, n))


def gsi_tail(cfg: FitConfig, n: int) -> tuple:
    """The gsi profile after the free fit: steps and classes, progressive rounding,
    colours, the entropy-coded file."""
    return (Quantize(cfg), PositionChoice(cfg, (RoundGeometry(cfg, n), Colours(cfg), Write())))


def gaussianimage_tail(cfg: FitConfig, n: int) -> tuple:
    """The gaussianimage profile after the free fit: GaussianImage's quantization-aware
    fine-tune (cfg.gi_qat_steps), its fixed-length file."""
    return (GIFineTune(cfg), Write())


TAILS = {"gsi": gsi_tail, "gaussianimage": gaussianimage_tail}


def encode_pipeline(cfg: FitConfig, n: int, profile: str = "gsi") -> Pipeline:
    """The whole encode of n Gaussians in `profile`."""
    return Pipeline(fit_stages(cfg, n) + TAILS[profile](cfg, n))
