"""CPU rendering without torch: the compiled kernel `gscodec._raster` (csrc/, built at
install time by setup.py) or, where it is missing, the slow pure-numpy fallback
(`gscodec.render.numpy_reference`), which gives the same pixels. The kernel draws waves
(format version 5) as spec section 10 says, bit for bit.

GSCODEC_NO_KERNEL=1 forces the fallback (for testing). Thread count: `set_num_threads`, else
$GSCODEC_NUM_THREADS, else $OMP_NUM_THREADS, else the CPUs available to the process.
"""
from __future__ import annotations

import warnings

import numpy as np

from .extension import (  # noqa: F401  (the backend surface and this module's old names)
    check_shapes,
    get_num_threads,
    kernel,
    kernel_available,
    set_num_threads,
    unavailable_reason,
)

_warned = False

available = kernel_available   # the backend surface (gscodec.render.backends)


def render_numpy(means, conics, colors, height: int, width: int, *,
                 num_threads: int | None = None, waves=None) -> np.ndarray:
    """Render N Gaussians by the contract of `gscodec.render`: float32 array [height, width, C].
    Inputs are array-likes converted to float32. Uses the compiled kernel (num_threads:
    None = get_num_threads()) or else the numpy fallback, with a one-time RuntimeWarning.
    waves: None or [N, 4] (kx, ky, phase, amp; format version 5), drawn exactly (spec
    section 10); a Gaussian whose amp is 0 renders as with no wave, bit for bit."""
    global _warned
    m = np.ascontiguousarray(means, dtype=np.float32)
    q = np.ascontiguousarray(conics, dtype=np.float32)
    c = np.ascontiguousarray(colors, dtype=np.float32)
    check_shapes(m.shape, q.shape, c.shape)
    height, width = int(height), int(width)
    if height < 0 or width < 0:
        raise ValueError(f"negative image size {height}x{width}")
    if waves is not None:
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if waves.shape != (m.shape[0], 4):
            raise ValueError(f"bad shape: waves {waves.shape}, need [{m.shape[0]}, 4]")
    ext = kernel()
    if ext is not None:
        # (without waves the call the kernel had before format v5)
        extra = () if waves is None else (waves,)
        return ext.forward(m, q, c, height, width, int(num_threads or 0), *extra)
    if not _warned:
        _warned = True
        warnings.warn(f"compiled CPU kernel unavailable ({unavailable_reason()}); decoding "
                      "with the slow numpy fallback", RuntimeWarning, stacklevel=2)
    from .numpy_reference import render_numpy_ref
    if waves is None:
        return render_numpy_ref(m, q, c, height, width)
    return render_numpy_ref(m, q, c, height, width, waves)


# ---- the backend surface (gscodec.render.backends): "kernel" --------------------------------

def render(means, conics, colors, height: int, width: int, waves=None):
    """Differentiable torch render with the compiled kernel (kernel_torch), waves included."""
    from .kernel_torch import render_cpu
    return render_cpu(means, conics, colors, height, width, waves)


def color_operator(means, conics, height: int, width: int, waves=None):
    """Colours -> image of fixed geometry (and waves) and its adjoint, on one kernel plan."""
    from .kernel_torch import PlanColorOperator
    return PlanColorOperator(means, conics, height, width, waves)


def render_window(means, conics, colors, x0: int, y0: int, width: int, height: int,
                  waves=None):
    """The decoder's uint8 pixels of a window (spec section 10), strip by strip; waves
    [N, 4] of the scaled view or None (a strip's origin does not change them), drawn
    exactly."""
    from .view import to_uint8_numpy, window_by_strips
    ext = kernel()
    if ext is None:
        raise RuntimeError(f"CPU raster kernel unavailable: {unavailable_reason()}")
    m = np.ascontiguousarray(means, dtype=np.float32)
    q = np.ascontiguousarray(conics, dtype=np.float32)
    c = np.ascontiguousarray(colors, dtype=np.float32)
    check_shapes(m.shape, q.shape, c.shape)
    if waves is not None:
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if waves.shape != (m.shape[0], 4):
            raise ValueError(f"bad shape: waves {waves.shape}, need [{m.shape[0]}, 4]")
    extra = () if waves is None else (waves,)
    return window_by_strips(
        lambda ms, rows: to_uint8_numpy(ext.forward(ms, q, c, rows, width, 0, *extra)),
        m, x0, y0, width, height, c.shape[1])
