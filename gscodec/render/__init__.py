"""Rendering of 2D Gaussians by accumulated summation (GaussianImage): no sorting, no alpha
compositing. This docstring is the contract every backend implements.

Inputs
    means  [N, 2] float32: (x, y), x to the right, y down, in pixels. The image covers
           [0, W] x [0, H]; the centre of pixel (row i, column j) is p = (j + 0.5, i + 0.5).
    conics [N, 3] float32: (a, b, c), the inverse covariance [[a, b], [b, c]].
    colors [N, C] float32, C = 1..4, any real values.

For pixel centre p and Gaussian k: d = p - mean_k and

    q = a*dx^2 + 2*b*dx*dy + c*dy^2,

evaluated in float32 as  q = (a*dx + (2*b)*dy)*dx + (c*dy)*dy  (each operation rounded,
no fused multiply-add), with dx = px - mean_x and dy = py - mean_y also in float32. Fixing
the evaluation order makes the q <= Q_CUT decision identical in every backend.

Gaussian k contributes colors_k * exp(-0.5*q) to the pixel iff q <= Q_CUT (Q_CUT = 12.0)
and its conic is positive definite: a > 0 and a*c - b*b > 0 (in float32). A Gaussian that
is not positive definite contributes nothing anywhere. (Backends also treat a Gaussian
with a non-finite mean or conic as contributing nothing.)

Output: the unclamped float32 sum over all Gaussians, shape [H, W, C]. exp may be
approximated with relative error below 1e-6, and summation order is unspecified.

8-bit conversion (`to_uint8`), scaling and cropping (`transform_for_view`) are applied by
the caller. Backends are named by strings ("cpu": compiled multi-threaded C++ kernel,
"reference": pure PyTorch); "auto" picks the best available one. New backends (e.g. "cuda")
register in `_BACKENDS`.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .common import Q_CUT
from .reference import render_reference

__all__ = ["Q_CUT", "render", "available_backends", "to_uint8", "transform_for_view",
           "render_reference"]


def _cpu_available() -> bool:
    from . import cpu
    return cpu.available()


def _cpu_reason() -> str | None:
    from . import cpu
    return cpu.unavailable_reason()


def _render_cpu(means, conics, colors, height, width):
    from .cpu import render_cpu
    return render_cpu(means, conics, colors, height, width)


# name -> (is_available, reason_unavailable, render function). Order = "auto" preference.
_BACKENDS: dict[str, tuple[Callable[[], bool], Callable[[], str | None], Callable]] = {
    "cpu": (_cpu_available, _cpu_reason, _render_cpu),
    "reference": (lambda: True, lambda: None, render_reference),
}
_AUTO_ORDER = ("cpu", "reference")
_warned_fallback = False


def available_backends() -> list[str]:
    """Names of the backends that work in this process (building the kernel if needed)."""
    return [name for name, (ok, _, _) in _BACKENDS.items() if ok()]


def _resolve(backend: str) -> str:
    global _warned_fallback
    if backend != "auto":
        if backend not in _BACKENDS:
            raise ValueError(f"unknown render backend {backend!r}; "
                             f"choose from {['auto', *_BACKENDS]}")
        ok, reason, _ = _BACKENDS[backend]
        if not ok():
            raise RuntimeError(f"render backend {backend!r} unavailable: {reason()}")
        return backend
    for name in _AUTO_ORDER:
        if _BACKENDS[name][0]():
            if name == "reference" and not _warned_fallback:
                _warned_fallback = True
                warnings.warn("gscodec: compiled CPU renderer unavailable, falling back to the "
                              f"slow PyTorch reference renderer ({_cpu_reason()})",
                              RuntimeWarning, stacklevel=3)
            return name
    return "reference"


def render(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
           height: int, width: int, *, backend: str = "auto") -> torch.Tensor:
    """Render N Gaussians to an unclamped float32 image [height, width, C] by the contract
    above. Differentiable with respect to means, conics and colors. backend: "auto",
    "cpu" or "reference"."""
    name = _resolve(backend)
    return _BACKENDS[name][2](means, conics, colors, int(height), int(width))


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """The spec's 8-bit rule: v -> clamp(floor(v*255 + 0.5), 0, 255), computed in float32
    (v is first converted to float32; v*255 and +0.5 are each rounded to float32).
    NaN maps to 0. Returns a uint8 tensor of the same shape."""
    v = torch.as_tensor(img).to(torch.float32)
    v = torch.floor(v * 255.0 + 0.5)
    v = torch.nan_to_num(v, nan=0.0).clamp_(0.0, 255.0)
    return v.to(torch.uint8)


def transform_for_view(means: torch.Tensor, conics: torch.Tensor, scale: float = 1.0,
                       offset=(0.0, 0.0)):
    """Gaussians as seen in a scaled and cropped view: means*scale - offset and
    conics/scale^2 (offset = (x0, y0) of the crop's top-left corner, in output pixels).
    Returns (means, conics) as new tensors of the same dtype."""
    s = float(scale)
    if not s > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    off = torch.as_tensor([float(offset[0]), float(offset[1])], dtype=means.dtype,
                          device=means.device)
    return means * s - off, conics / (s * s)


# TEMPORARY shim until the numpy kernel lands (merge replaces this block)
def render_numpy(means, conics, colors, height, width):
    import numpy as np
    out = render(torch.from_numpy(means), torch.from_numpy(conics), torch.from_numpy(colors),
                 height, width)
    return out.numpy()


def to_uint8_numpy(img):
    return to_uint8(torch.from_numpy(img)).numpy()


def cuda_available():
    return False, "no cuda backend in this build"
