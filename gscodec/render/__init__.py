"""Rendering of 2D Gaussians by accumulated summation (GaussianImage): no sorting, no alpha
compositing. This docstring is the contract every backend implements; spec/gsi-format.md
section 10 states the decoder's part of it normatively, to the bit.

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

Waves (format version 5; spec section 10.3): an optional
    waves  [N, 4] float32: (kx, ky, phase, amp) per Gaussian, None or all amp == 0: none.
Where Gaussian k contributes, a wave (amp != 0) multiplies its weight e = exp(-0.5*q) by
1 + amp * cos(arg), arg = (kx*dx + ky*dy) + phase, in float32 in that order (t = amp * cos,
t = 1 + t, w = e * t), cos being the spec's cos_gsi (`numpy_reference.cos_gsi`) in the exact
backends; amp == 0 evaluates no cosine, so it is bit-identical to no wave. A Gaussian with
a wave that is not finite contributes nothing. The CPU backends draw waves ("kernel"
bit-identical to "numpy_reference"); "triton" does not yet (`backends`).

Output: the unclamped float32 sum over all Gaussians, shape [H, W, C].

Exact backends (the decoder's: "kernel", "numpy_reference", "triton" in exact mode) follow
spec section 10 to the bit: the candidate pixels of a Gaussian are those of its row spans
(solved in float64, widened by one pixel), the weight is the spec's polynomial exp, and each
pixel sums in increasing Gaussian index from +0.0 in float32. The differentiable backends
("torch_reference", "triton") may use any exp with relative error below 1e-6, any summation
order and every pixel of the Gaussian's box (the row spans only exclude pixels where a
float32 q is meaningless: far from the axis of a needle-thin Gaussian).

8-bit conversion (`to_uint8`), scaling and cropping (`transform_for_view`) are applied by
the caller. The backends and the choice of "auto" are in `backends` (the registry): "auto"
takes "triton" for tensors on a CUDA device and the compiled "kernel" otherwise. The decoder
renders with `render_window`, which never imports torch on the CPU; nor does importing this
module.
"""
from __future__ import annotations

from .backends import (
    available_backends,
    choose,
    color_operator,
    refresh,
    render,
    render_window,
    resolve_backend,
)
from .common import Q_CUT, STRIP_ROWS, strips, waves_active
from .kernel import render_numpy
from .view import to_uint8, to_uint8_numpy, transform_for_view, waves_for_view

__all__ = ["Q_CUT", "STRIP_ROWS", "available_backends", "choose", "color_operator", "refresh",
           "render", "render_numpy", "render_reference", "render_window", "resolve_backend",
           "strips", "to_uint8", "to_uint8_numpy", "transform_for_view", "waves_active",
           "waves_for_view"]


def __getattr__(name):
    # torch is imported only when a torch function is first asked for.
    if name == "render_reference":
        from .torch_reference import render_reference
        return render_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
