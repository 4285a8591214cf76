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

Waves (format version 5; spec/gsi-format.md section 10): an optional
    waves  [N, 4] float32: (kx, ky, phase, amp) per Gaussian, None or all amp == 0: none.
Where Gaussian k contributes, a wave (amp != 0) multiplies its weight e = exp(-0.5*q) by
1 + amp * cos(arg), arg = (kx*dx + ky*dy) + phase, in float32 in that order (and t =
amp * cos, t = 1 + t, w = e * t), cos being `numpy_reference.cos_gsi` in the exact
renderers; amp == 0 evaluates no cosine, so it is bit-identical to no wave. A Gaussian
with a wave that is not finite contributes nothing. The numpy renderer (`render_numpy`
routes waves to it) and the torch backend "reference" draw waves; the compiled kernel
("cpu") and the Triton backend ("cuda") do not yet and raise NotImplementedError when
waves matter (`common.waves_active`); "auto" then picks "reference" for CPU tensors.

Output: the unclamped float32 sum over all Gaussians, shape [H, W, C]. exp may be
approximated with relative error below 1e-6, and summation order is unspecified.

8-bit conversion (`to_uint8`), scaling and cropping (`transform_for_view`) are applied by
the caller. Torch backends (differentiable, for the encoder) are named by strings ("cpu":
compiled multi-threaded C++ kernel, "reference": pure PyTorch, "cuda": Triton kernels on the
GPU); "auto" picks "cuda" for tensors on a CUDA device and the best CPU backend otherwise.
New backends register in `_BACKENDS`. The decoder renders with
`render_numpy` (numpy arrays; the compiled kernel or a numpy fallback), which never imports
torch; nor does importing this module.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from . import kernel as _kernel
from .common import Q_CUT, refuse_waves, waves_active
from .kernel import render_numpy

__all__ = ["Q_CUT", "render", "color_operator", "resolve_backend", "available_backends",
           "to_uint8", "to_uint8_numpy", "transform_for_view", "waves_for_view",
           "render_reference", "render_numpy", "cuda_available", "render_uint8_cuda",
           "waves_active"]


def __getattr__(name):
    # torch is imported only when a torch function is first asked for.
    if name == "render_reference":
        from .torch_reference import render_reference
        return render_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cpu_available() -> bool:
    return _kernel.kernel_available()


def _cpu_reason() -> str | None:
    return _kernel.unavailable_reason()


def _render_cpu(means, conics, colors, height, width, waves=None):
    from .kernel_torch import render_cpu
    return render_cpu(means, conics, colors, height, width, waves)


def _render_cuda(means, conics, colors, height, width, waves=None):
    from .triton import render_cuda
    return render_cuda(means, conics, colors, height, width, waves=waves)


def _cuda_available() -> bool:
    return cuda_available()[0]


def _cuda_reason() -> str | None:
    return cuda_available()[1]


def cuda_available() -> tuple[bool, str | None]:
    """(usable, reason if not) for the Triton backend. Does not import torch unless it is
    installed; a process without torch has no CUDA backend."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    from . import triton as cuda
    reason = cuda.unavailable_reason()
    return reason is None, reason


def _render_reference(means, conics, colors, height, width, waves=None):
    from .torch_reference import render_reference
    return render_reference(means, conics, colors, height, width, waves)


# name -> (is_available, reason_unavailable, render function) of the torch backends.
_BACKENDS: dict[str, tuple[Callable[[], bool], Callable[[], str | None], Callable]] = {
    "cpu": (_cpu_available, _cpu_reason, _render_cpu),
    "reference": (lambda: True, lambda: None, _render_reference),
    "cuda": (_cuda_available, _cuda_reason, _render_cuda),
}
_AUTO_ORDER = ("cpu", "reference")   # "auto" preference for CPU tensors
_warned_fallback = False


def available_backends() -> list[str]:
    """Names of the torch backends that work in this process."""
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


def _auto(backend: str, means, waves) -> str:
    """`backend` with "auto" narrowed by the tensors: "cuda" for CUDA tensors, "reference"
    for CPU tensors with waves that matter (until the compiled kernel draws waves)."""
    if backend != "auto":
        return backend
    if getattr(means, "is_cuda", False):
        return "cuda"
    return "reference" if waves_active(waves) else backend


def resolve_backend(backend: str, means=None, waves=None) -> str:
    """The backend `render` would use for `backend` and tensors like `means` (and `waves`):
    "auto" resolved (`_auto`, then the best available), checked to be available."""
    return _resolve(_auto(backend, means, waves))


def render(means, conics, colors, height: int, width: int, *, backend: str = "auto",
           waves=None):
    """Render N Gaussians to an unclamped float32 image [height, width, C] by the contract
    above. Differentiable with respect to means, conics, colors (and waves [N, 4], which
    only "reference" draws yet). backend: "auto", "cpu", "reference" or "cuda"."""
    name = _resolve(_auto(backend, means, waves))
    return _BACKENDS[name][2](means, conics, colors, int(height), int(width), waves=waves)


class _AutogradColorOperator:
    """Colours -> image for fixed geometry and its adjoint, through any backend's render and
    autograd (the image is linear in the colours)."""

    def __init__(self, means, conics, height, width, backend, waves=None):
        self.args = (means.detach(), conics.detach())
        self.waves = None if waves is None else waves.detach()
        self.size = (int(height), int(width))
        self.backend = backend

    def forward(self, colors):
        import torch
        with torch.no_grad():
            return render(*self.args, colors, *self.size, backend=self.backend,
                          waves=self.waves)

    def adjoint(self, v):
        import torch
        with torch.enable_grad():
            col = torch.zeros(self.args[0].shape[0], v.shape[-1], device=v.device,
                              requires_grad=True)
            out = render(*self.args, col, *self.size, backend=self.backend, waves=self.waves)
            (g,) = torch.autograd.grad(out, col, grad_outputs=v)
        return g


def color_operator(means, conics, height: int, width: int, *, backend: str = "auto",
                   waves=None):
    """The rendering of fixed geometry (and waves) as a linear map of the colours: an
    object with forward(colors [N, C]) -> [height, width, C] and adjoint(v [height, width,
    C]) -> [N, C] (torch tensors, no autograd). On the compiled CPU kernel both run on one
    plan of the geometry, so repeated passes (the encoder's colour solves) skip the
    set-up."""
    if waves is not None:
        waves = waves.detach()         # fixed here: only the colours vary
    name = _resolve(_auto(backend, means, waves))
    if name == "cpu":
        from .kernel_torch import PlanColorOperator
        return PlanColorOperator(means, conics, height, width, waves)
    return _AutogradColorOperator(means, conics, height, width, name, waves)


def render_uint8_cuda(means: np.ndarray, conics: np.ndarray, colors: np.ndarray,
                      x0: int, y0: int, width: int, height: int,
                      strip_rows: int = 512, waves: np.ndarray | None = None) -> np.ndarray:
    """The decoder's GPU path: float32 arrays -> uint8 [height, width, C] of the window at
    (x0, y0), rendered by the Triton backend in strips, in its exact mode (the same float32
    bits as the CPU kernel, so the same 8-bit pixels), and converted on the device. Without
    a GPU (Triton's interpreter, for tests) it runs on CPU tensors. No waves yet
    (NotImplementedError if they matter: the decoder renders those on the CPU)."""
    refuse_waves(waves, "cuda")
    import torch

    from .triton import render_cuda
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = torch.from_numpy(means).to(dev)
    q = torch.from_numpy(conics).to(dev)
    c = torch.from_numpy(colors).to(dev)
    out = torch.empty((height, width, colors.shape[1]), dtype=torch.uint8, device=dev)
    with torch.no_grad():
        for r0 in range(0, height, strip_rows):
            rows = min(strip_rows, height - r0)
            off = torch.tensor([float(x0), float(y0 + r0)], device=dev)
            out[r0:r0 + rows] = to_uint8(render_cuda(m - off, q, c, rows, width, exact=True))
    return out.cpu().numpy()


def to_uint8(img):
    """The spec's 8-bit rule: v -> clamp(floor(v*255 + 0.5), 0, 255), computed in float32
    (v is first converted to float32; v*255 and +0.5 are each rounded to float32).
    NaN maps to 0. Returns a uint8 tensor of the same shape."""
    import torch
    v = torch.as_tensor(img).to(torch.float32)
    v = torch.floor(v * 255.0 + 0.5)
    v = torch.nan_to_num(v, nan=0.0).clamp_(0.0, 255.0)
    return v.to(torch.uint8)


def to_uint8_numpy(img) -> np.ndarray:
    """`to_uint8` for numpy arrays (same rule, same results): a uint8 array. In place on
    one float32 buffer: a quarter of a Kodak decode's time went to the temporaries."""
    v = np.multiply(img, np.float32(255.0), dtype=np.float32)
    v += np.float32(0.5)
    np.floor(v, out=v)
    np.maximum(v, np.float32(0.0), out=v)          # NaN passes through both ...
    np.minimum(v, np.float32(255.0), out=v)
    v[np.isnan(v)] = 0.0                           # ... and maps to 0 here
    return v.astype(np.uint8)


def transform_for_view(means, conics, scale: float = 1.0, offset=(0.0, 0.0), waves=None):
    """Gaussians as seen in a scaled and cropped view: means*scale - offset and
    conics/scale^2 (offset = (x0, y0) of the crop's top-left corner, in output pixels).
    Returns (means, conics) as new tensors (or numpy arrays, for numpy inputs) of the same
    dtype; with `waves`, (means, conics, waves_for_view(waves, scale))."""
    s = float(scale)
    if not s > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if isinstance(means, np.ndarray):
        off = np.asarray([float(offset[0]), float(offset[1])], dtype=means.dtype)
        view = means * means.dtype.type(s) - off, conics / conics.dtype.type(s * s)
    else:
        import torch
        off = torch.as_tensor([float(offset[0]), float(offset[1])], dtype=means.dtype,
                              device=means.device)
        view = means * s - off, conics / (s * s)
    return view if waves is None else (*view, waves_for_view(waves, s))


def waves_for_view(waves, scale: float = 1.0):
    """Waves [N, 4] (kx, ky, phase, amp) in a view at `scale` (None stays None): the wave
    vector divided by the scale, in the waves' dtype (float32: kx / f32(s), ky / f32(s),
    each rounded once; spec section 10), phase and amp unchanged. d is measured from the
    mean, so a crop's offset changes nothing."""
    if waves is None:
        return None
    s = float(scale)
    if isinstance(waves, np.ndarray):
        out = waves.copy()
        out[:, :2] /= waves.dtype.type(s)
        return out
    import torch
    return torch.cat([waves[:, :2] / s, waves[:, 2:]], dim=1)
