"""`Fitter`: one image's gsi encode as one object, for scripts and tests that want the
integers of a fit in one call (`Fitter(image, cfg).fit(n)`) or the starting set
(`.start(n)`). It runs the encoder's pipeline (`pipeline.py`) on its own state; library
code uses the pipeline directly. `FitConfig` and `EFFORT_PRESETS` live in `config.py`."""
from __future__ import annotations

import numpy as np

from ..bitstream.model import QuantizedGaussians
from .config import EFFORT_PRESETS, FitConfig
from .objective import Objective
from .params import GaussianParams
from .pipeline import encode_pipeline
from .stages import EncodeState

__all__ = ["Fitter", "FitConfig", "EFFORT_PRESETS"]


class Fitter:
    """The objective of `image` (mask: HxW bool, True = unknown pixel, ignored) and one
    encode state seeded with cfg.seed."""

    def __init__(self, image: np.ndarray, cfg: FitConfig, mask: np.ndarray | None = None):
        self.cfg = cfg
        self.objective = Objective(image, cfg, mask)
        self.device = self.objective.device
        self.state = EncodeState.new(self.objective, cfg.seed)

    def start(self, n: int) -> GaussianParams:
        """n Gaussians placed by the configured initializer (draws from the state's
        generator)."""
        return self.objective.start(n, self.state.gen)

    def fit(self, n: int, progress: bool = False) -> QuantizedGaussians:
        """The integers of the gsi encode of n Gaussians (the file: self.state.data)."""
        return encode_pipeline(self.cfg, n, "gsi").run(self.objective, self.state,
                                                       progress).coded
