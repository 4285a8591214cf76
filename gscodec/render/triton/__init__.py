"""Triton backend ("triton"): tile-binned accumulated summation of 2D Gaussians on the GPU.

Implements the contract in `gscodec.render`. Modules: `kernels` (the Triton kernels and
their one launch path), `binning` (tiles in five launches, no host sync), `autograd` (the
differentiable render, the colour operator, the decoder's exact strips). Under
`TRITON_INTERPRET=1` (set before triton is imported) the same kernels run on CPU tensors:
that is how the tests exercise them on machines without a GPU.

Normal mode (the encoder): per strip of STRIP_ROWS rows, binning and one forward launch
(6 launches at 768x512); forward deterministic; backward by relaxed atomics or, with
deterministic=True, per-pair partial sums reduced in a fixed order (bit-identical across
runs). No host synchronisation: a render can be captured in a CUDA graph (shapes depend
only on N, C, H, W and the pair capacity; `bin_gaussians(...).overflow` tells after replay
whether every Gaussian took the fast path; correctness does not depend on it).

Exact mode (`render(..., exact=True)` and `render_window`, the decoder): spec section 10 to
the bit, hence the CPU kernel's float32 sums and 8-bit pixels: every drawn Gaussian in the
pairs, its candidate pixels by the spec's float64 row spans, the spec's polynomial exp,
each pixel summed in increasing Gaussian index. Pairs come in bounded chunks (one host read
per chunk), so a crafted file cannot exhaust memory or overflow offsets.

Nothing here imports torch or triton until a function is called.
"""
from __future__ import annotations

import functools
import os

__all__ = ["Binning", "available", "bin_gaussians", "color_operator", "fast_exp",
           "interpreter_active", "refresh", "render", "render_window", "unavailable_reason"]


def interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1: kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def unavailable_reason() -> str | None:
    """Why the backend cannot run here, or None; answered once (see refresh)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"triton does not import: {type(exc).__name__}: {exc}"
    if interpreter_active():
        return _interpreter_problem()
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def _interpreter_problem() -> str | None:
    """Triton's interpreter before 3.7 fails on our data-dependent loop bounds with numpy
    2.4 or later ("only 0-dimensional arrays can be converted to Python scalars"); the
    compiled kernels are not affected."""
    import numpy
    import triton

    def version(mod):
        return tuple(int(p) for p in mod.__version__.split(".")[:2] if p.isdigit())
    if version(triton) < (3, 7) and version(numpy) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter does not work with numpy "
                f"{numpy.__version__} (needs Triton >= 3.7 or numpy < 2.4)")
    return None


def available() -> bool:
    return unavailable_reason() is None


def refresh() -> None:
    unavailable_reason.cache_clear()


def __getattr__(name):
    if name in ("Binning", "bin_gaussians"):
        from . import binning
        return getattr(binning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_inputs(means, conics, colors, height, width):
    from .autograd import check_device
    if means.dim() != 2 or means.shape[1] != 2 or conics.shape != (means.shape[0], 3) \
            or colors.dim() != 2 or colors.shape[0] != means.shape[0] \
            or not 1 <= colors.shape[1] <= 4:
        raise ValueError(f"bad shapes: means {tuple(means.shape)}, conics "
                         f"{tuple(conics.shape)}, colors {tuple(colors.shape)} (C must be 1..4)")
    if not (means.device == conics.device == colors.device):
        raise ValueError("means, conics and colors must be on the same device")
    if int(height) < 0 or int(width) < 0:
        raise ValueError(f"bad image size {height}x{width}")
    check_device(means)


def render(means, conics, colors, height: int, width: int, waves=None, *,
           deterministic: bool = False, strip_rows: int | None = None,
           pair_capacity: int | None = None, max_tiles: int | None = None,
           exact: bool = False):
    """Render [height, width, C] float32 by the contract of `gscodec.render`.
    Differentiable w.r.t. means, conics, colors. deterministic=True: bit-identical backward
    across runs. strip_rows, pair_capacity and max_tiles tune memory and speed only.

    exact=True: the forward of spec section 10 (the CPU kernel's bits; one host read per
    strip, so not CUDA-graph capturable). If a gradient is asked for, backward is the
    normal mode's (re-binned, tl.exp): the gradient of an image equal to this one up to
    rounding. waves (format v5): not drawn yet, NotImplementedError if they matter."""
    from ..common import STRIP_ROWS, refuse_waves
    refuse_waves(waves, "triton")
    from .autograd import RenderTriton, render_opts
    from .binning import MAX_TILES_PER_GAUSSIAN
    _check_inputs(means, conics, colors, height, width)
    opts = render_opts(STRIP_ROWS if strip_rows is None else strip_rows, pair_capacity,
                       MAX_TILES_PER_GAUSSIAN if max_tiles is None else max_tiles, exact)
    return RenderTriton.apply(means, conics, colors, int(height), int(width),
                              bool(deterministic), opts)


def color_operator(means, conics, height: int, width: int, waves=None):
    """forward(colors) -> image and adjoint(image) -> [N, C] on binning made once."""
    from ..common import refuse_waves
    from .autograd import ColorOperator
    refuse_waves(waves, "triton")
    return ColorOperator(means, conics, height, width)


def render_window(means, conics, colors, x0: int, y0: int, width: int, height: int,
                  waves=None):
    """The decoder's uint8 pixels [height, width, C] of the window at (x0, y0), spec
    section 10 strip by strip (float32 numpy arrays in, numpy out), on the GPU (or, under
    the interpreter, on CPU tensors). No waves yet (the decoder renders those with the
    numpy reference)."""
    import numpy as np
    import torch

    from ..common import refuse_waves, strips
    refuse_waves(waves, "triton")
    from . import kernels
    from .autograd import exact_strip
    dev = torch.device("cpu" if kernels.INTERPRETED else "cuda")
    m, q, c = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)
               for a in (means, conics, colors))
    _check_inputs(m, q, c, height, width)
    out = np.empty((height, width, c.shape[1]), dtype=np.uint8)
    with torch.no_grad():
        for row0, rows in strips(height):
            strip = torch.empty((rows, width, c.shape[1]), dtype=torch.uint8, device=dev)
            if m.shape[0] == 0:
                strip.zero_()
            else:
                exact_strip(m, q, c, None, strip, 0, rows, width,
                            shift=(float(x0), float(y0 + row0)))
            out[row0:row0 + rows] = strip.cpu().numpy()
    return out


def fast_exp(x):
    """The exact mode's exp (float32 tensor on the backend's device -> same shape): spec
    10.3 bit for bit (NaN maps to fast_exp(0) = 1 here). For tests."""
    import torch

    from . import kernels as K
    from .autograd import check_device
    check_device(x)
    xf = x.detach().to(torch.float32).contiguous().reshape(-1)
    y = torch.empty_like(xf)
    n = xf.numel()
    if n:
        K.launch(K._fast_exp_kernel, (-(-n // 1024),), xf, y, n, BLOCK=1024)
    return y.reshape(x.shape)
