"""The compiled CPU kernel `gscodec._raster` (csrc/, built at install time by setup.py): its
loading, availability and thread count. The numpy decoder (`kernel.py`) and the torch
backend (`kernel_torch.py`) both reach the extension through here.

GSCODEC_NO_KERNEL=1 disables it (for testing). Thread count: `set_num_threads`, else
$GSCODEC_NUM_THREADS, else $OMP_NUM_THREADS, else the CPUs available to the process.
"""
from __future__ import annotations

import os

_module = None
_import_error: str | None = None
_tried = False


def _load():
    global _module, _import_error, _tried
    if not _tried:
        try:
            from .. import _raster
            _module = _raster
        except ImportError as exc:
            _import_error = (f"gscodec._raster is not built ({exc}); reinstall gscodec with a "
                             "C++ compiler available (pip install -e . builds it)")
        _tried = True
    return _module


def _disabled() -> bool:
    return os.environ.get("GSCODEC_NO_KERNEL", "").strip() not in ("", "0")


def kernel():
    """The compiled extension module, or None (missing, or disabled by GSCODEC_NO_KERNEL)."""
    return None if _disabled() else _load()


def kernel_available() -> bool:
    return kernel() is not None



def unavailable_reason() -> str | None:
    """Why the compiled kernel cannot be used, or None when it can."""
    if _disabled():
        return "disabled by GSCODEC_NO_KERNEL"
    _load()
    return _import_error


def set_num_threads(n: int) -> None:
    """Threads used by the compiled kernel (the numpy fallback is single-threaded)."""
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    ext = _load()
    if ext is not None:
        ext.set_num_threads(int(n))


def get_num_threads() -> int:
    ext = _load()
    return ext.get_num_threads() if ext is not None else 1


def check_shapes(means_shape, conics_shape, colors_shape) -> None:
    """ValueError unless the shapes are [N, 2], [N, 3], [N, C] with C in 1..4."""
    ok = (len(means_shape) == 2 and means_shape[1] == 2 and len(conics_shape) == 2
          and len(colors_shape) == 2 and tuple(conics_shape) == (means_shape[0], 3)
          and colors_shape[0] == means_shape[0] and 1 <= colors_shape[1] <= 4)
    if not ok:
        raise ValueError(f"bad shapes: means {tuple(means_shape)}, conics {tuple(conics_shape)}, "
                         f"colors {tuple(colors_shape)} (need [N, 2], [N, 3], [N, C], C in 1..4)")
