"""The registry of rendering backends and the one place where "auto" is resolved.

A backend is a module of gscodec.render with this surface (all of it, or the part its
entry below says it implements):

    available() -> bool, unavailable_reason() -> str | None
        Answered once per process (cached in the module); `refresh()` asks again.
    render(means, conics, colors, height, width) -> float32 tensor [height, width, C]
        torch tensors, differentiable in means, conics and colors ("differentiable").
    color_operator(means, conics, height, width) -> op with op.forward(colors) -> image
        and op.adjoint(image) -> [N, C]: the render of fixed geometry as a linear map of
        the colours, set up once for many passes ("differentiable").
    render_window(means, conics, colors, x0, y0, width, height) -> uint8 [height, width, C]
        The decoder's pixels by spec section 10, bit-exact: float32 numpy arrays of the
        scaled view in, the window at (x0, y0) rendered strip by strip ("window").

Each of them takes an optional `waves` [N, 4] (kx, ky, phase, amp; format version 5). The
CPU backends ("kernel", "torch_reference", "numpy_reference") draw waves, the kernel's
window bit-identical to numpy_reference's; "triton" raises NotImplementedError when waves
matter (`common.waves_active`), and a window with such waves is rendered on the CPU.

Nothing here imports torch; a backend module is imported when it is first used.
"""
from __future__ import annotations

import functools
import importlib
import sys
import warnings
from typing import NamedTuple

from .common import waves_active


class Backend(NamedTuple):
    name: str
    device: str            # "cpu" or "cuda": where its tensors live
    differentiable: bool   # render / color_operator on torch tensors
    window: bool           # render_window: the decoder's exact pixels
    about: str


BACKENDS = {b.name: b for b in (
    Backend("kernel", "cpu", True, True, "compiled C++ kernel gscodec._raster (csrc/)"),
    Backend("triton", "cuda", True, True,
            "Triton kernels on a CUDA GPU (on CPU tensors under TRITON_INTERPRET=1)"),
    Backend("torch_reference", "cpu", True, False, "pure PyTorch, the tests' ground truth"),
    Backend("numpy_reference", "cpu", False, True, "pure numpy, the decoder's fallback"),
)}

# "auto" on the CPU: the first available of these (the second is a slow fallback).
_CPU_ORDER = {"differentiable": ("kernel", "torch_reference"),
              "window": ("kernel", "numpy_reference")}
_warned: set[str] = set()


@functools.cache
def module(name: str):
    """The module of backend `name` (imported on first use)."""
    return importlib.import_module(f"{__package__}.{name}")


@functools.cache
def unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot be used in this process, or None (asked once)."""
    return module(name).unavailable_reason()


def refresh() -> None:
    """Forget the cached availability and choices (after GSCODEC_NO_KERNEL or
    TRITON_INTERPRET changed in this process: tests)."""
    unavailable_reason.cache_clear()
    _auto_cpu.cache_clear()
    for name in BACKENDS:
        mod = sys.modules.get(f"{__package__}.{name}")
        if mod is not None and hasattr(mod, "refresh"):
            mod.refresh()


def available_backends(kind: str = "differentiable") -> list[str]:
    """Names of the backends of this kind ("differentiable" or "window") usable here."""
    return [b.name for b in BACKENDS.values()
            if getattr(b, kind) and unavailable_reason(b.name) is None]


@functools.cache
def _auto_cpu(kind: str) -> str:
    first, fallback = _CPU_ORDER[kind]
    return first if unavailable_reason(first) is None else fallback


def choose(backend: str, *, kind: str = "differentiable", on_cuda: bool = False) -> str:
    """The backend to use: `backend` itself, checked, or for "auto" the Triton backend on
    CUDA data and else the compiled kernel, falling back (with a one-time warning) to the
    slow reference of this kind."""
    if backend == "auto":
        if on_cuda:
            backend = "triton"
        else:
            name = _auto_cpu(kind)
            if name != _CPU_ORDER[kind][0] and kind not in _warned:
                _warned.add(kind)
                what = "decoding" if kind == "window" else "rendering"
                warnings.warn(f"gscodec: compiled CPU kernel unavailable "
                              f"({unavailable_reason('kernel')}); {what} with the slow "
                              f"{name} fallback", RuntimeWarning, stacklevel=3)
            return name
    entry = BACKENDS.get(backend)
    if entry is None or not getattr(entry, kind):
        names = [b.name for b in BACKENDS.values() if getattr(b, kind)]
        raise ValueError(f"unknown render backend {backend!r}; choose from {['auto', *names]}")
    reason = unavailable_reason(backend)
    if reason is not None:
        raise RuntimeError(f"render backend {backend!r} unavailable: {reason}")
    return backend


def resolve_backend(backend: str, means=None, waves=None) -> str:
    """The backend `render` would use for `backend` and tensors like `means` (`waves`
    changes nothing: every CPU backend draws them)."""
    on_cuda = bool(getattr(means, "is_cuda", False))
    return choose(backend, on_cuda=on_cuda)


def render(means, conics, colors, height: int, width: int, *, backend: str = "auto",
           waves=None):
    """Render N Gaussians to an unclamped float32 image [height, width, C] by the contract
    of gscodec.render, differentiable with respect to means, conics and colors (and waves
    [N, 4], format v5: the CPU backends)."""
    on_cuda = bool(getattr(means, "is_cuda", False))
    name = choose(backend, on_cuda=on_cuda)
    return module(name).render(means, conics, colors, int(height), int(width), waves=waves)


def color_operator(means, conics, height: int, width: int, *, backend: str = "auto",
                   waves=None):
    """The rendering of fixed geometry (and waves) as a linear map of the colours: an
    object with forward(colors [N, C]) -> [height, width, C] and adjoint(v [height, width,
    C]) -> [N, C] (torch tensors, no autograd), set up once for the many passes of a colour
    solve."""
    on_cuda = bool(getattr(means, "is_cuda", False))
    waves = None if waves is None else waves.detach()      # fixed: only the colours vary
    name = choose(backend, on_cuda=on_cuda)
    return module(name).color_operator(means, conics, int(height), int(width), waves=waves)


def render_window(means, conics, colors, x0: int, y0: int, width: int, height: int, *,
                  device: str = "cpu", waves=None):
    """The decoder's pixels: uint8 [height, width, C] of the window at (x0, y0) of the
    scaled view (float32 numpy arrays; waves [N, 4] or None), by spec section 10, on
    `device` ("cpu" or "cuda"). Every window backend gives the same bytes; with waves that
    matter, on the CPU (the Triton backend draws none)."""
    if waves_active(waves):
        device = "cpu"
    name = choose("auto", kind="window", on_cuda=device == "cuda")
    if name == "triton" and unavailable_reason(name) is not None:
        raise RuntimeError(f"render backend 'triton' unavailable: {unavailable_reason(name)}")
    return module(name).render_window(means, conics, colors, int(x0), int(y0), int(width),
                                      int(height), waves=waves)
