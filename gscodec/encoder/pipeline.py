"""An encode as a pipeline of named stages (`stages.py`) over one explicit state.

    free fit        Start, FreeFit                                  (`fit_stages`)
    gsi tail        Quantize, RoundGeometry, Colours, Write         (TAILS["gsi"])
    GaussianImage   GIFineTune, Write                               (TAILS["gaussianimage"])

`encode_pipeline(cfg, n, profile)` is the whole encode; rate control (`ratecontrol.py`) and
the one-fit-several-profiles encode (`api.encode_profiles`) run the same stages in their
own order. `Pipeline.run_stage` runs one stage and adds its wall time to
`state.seconds[stage.name]`: the place for a profiler to wrap (on a GPU, synchronise there
for exact times).
"""
from __future__ import annotations

import time

from .config import FitConfig
from .gi_finetune import GIFineTune
from .progress import Progress
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


def fit_stages(cfg: FitConfig, n: int) -> tuple:
    """The free fit of n Gaussians, common to both profiles."""
    return (Start(cfg, n), FreeFit(cfg, n))


def gsi_tail(cfg: FitConfig, n: int) -> tuple:
    """The gsi profile after the free fit: steps and classes, progressive rounding,
    colours, the entropy-coded file."""
    return (Quantize(cfg), RoundGeometry(cfg, n), Colours(cfg), Write())


def gaussianimage_tail(cfg: FitConfig, n: int) -> tuple:
    """The gaussianimage profile after the free fit: GaussianImage's quantization-aware
    fine-tune (cfg.gi_qat_steps), its fixed-length file."""
    return (GIFineTune(cfg), Write())


TAILS = {"gsi": gsi_tail, "gaussianimage": gaussianimage_tail}


def encode_pipeline(cfg: FitConfig, n: int, profile: str = "gsi") -> Pipeline:
    """The whole encode of n Gaussians in `profile`."""
    return Pipeline(fit_stages(cfg, n) + TAILS[profile](cfg, n))
