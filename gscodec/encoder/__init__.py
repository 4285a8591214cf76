"""The encoder: start (`init`), fit (`fit`, `masked`), quantize (`quantize`), rate control
(`ratecontrol`) and the GaussianImage profile's fine-tune (`gaussianimage`). Needs torch;
the decoder below it does not."""
from .api import DEFAULT_DENSITY, default_gaussians, encode

__all__ = ["encode", "default_gaussians", "DEFAULT_DENSITY"]
