"""Image quality measures used by the CLI and the benchmarks."""
from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two uint8 images of the same shape (peak 255). `mask` (HxW
    bool) restricts the measure to the pixels where it is True."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    d = (a - b) ** 2
    if mask is not None:
        d = d[np.asarray(mask, dtype=bool)]
    mse = float(d.mean()) if d.size else 0.0
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
