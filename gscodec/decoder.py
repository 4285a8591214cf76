"""Decoding: .gsi bytes -> integers (`bitstream`) -> pixels (`render`). The ground floor of
the package: numpy, constriction and the compiled kernel, never torch, except for
`device="cuda"` (the Triton rasterizer). Pixels follow spec/gsi-format.md section 10 on
every device: the same bytes from the CPU kernel, its numpy fallback and the GPU."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from .bitstream import format as gsi_format
from .bitstream.model import MAX_SIDE, QuantizedGaussians
from .errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def read_bytes(data_or_path) -> bytes:
    """The bytes of a .gsi given as bytes or a path (InputError if it cannot be read)."""
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        return bytes(data_or_path)
    if isinstance(data_or_path, (str, os.PathLike)):
        path = Path(data_or_path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    raise InputError(f"cannot decode an object of type {type(data_or_path).__name__}")


def read(data_or_path) -> QuantizedGaussians:
    """Parse a .gsi file into its integers (FormatError if it is not a valid file)."""
    return gsi_format.read(read_bytes(data_or_path))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of a rendering at `scale`: floor(side * scale + 0.5), at least 1."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise InputError(f"scale must be a positive number (got {scale!r})")
    ow = max(1, int(math.floor(width * scale + 0.5)))
    oh = max(1, int(math.floor(height * scale + 0.5)))
    if ow > MAX_SIDE or oh > MAX_SIDE:
        raise InputError(f"scale {scale} gives {ow}x{oh}; the decoder renders at most "
                         f"{MAX_SIDE} pixels a side")
    return ow, oh


def nvidia_driver_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing torch)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def resolve_device(device: str, *, encoding: bool = False) -> str:
    """"cpu" or "cuda" for the user's device option. "auto" takes the GPU when one is usable;
    for decoding only if torch is already loaded in this process, since importing torch
    (about 1.4 s) costs far more than a CPU decode (about 20 ms at Kodak size)."""
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r} (use {', '.join(DEVICES)})")
    if device == "cpu":
        return "cpu"
    if device == "auto" and not (nvidia_driver_present()
                                 and (encoding or "torch" in sys.modules)):
        return "cpu"
    from .render.backends import unavailable_reason
    reason = unavailable_reason("triton")
    if device == "cuda" and reason is not None:
        raise InputError(f"device cuda unavailable: {reason}")
    return "cuda" if reason is None else "cpu"


def render_gaussians(qg: QuantizedGaussians, *, scale: float = 1.0, device: str = "auto",
                     crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Render decoded Gaussians (either profile) to uint8: HxW for one channel, else HxWxC.

    crop: (x, y, width, height) window of the output grid at this scale."""
    dev = resolve_device(device)
    ow, oh = output_size(qg.width, qg.height, scale)
    x0, y0, cw, ch = crop if crop is not None else (0, 0, ow, oh)
    if min(cw, ch) < 1 or x0 < 0 or y0 < 0 or x0 + cw > ow or y0 + ch > oh:
        raise InputError(f"crop {crop} is not inside the {ow}x{oh} output")
    from .render import render_window, transform_for_view, waves_for_view
    means, conics, colors = qg.render_inputs()
    # The scaled view (spec 10.1); render_window moves it to each strip's origin.
    means, conics = transform_for_view(means, conics, scale)
    # None: no Gaussian has a wave (format v5). The Triton backend draws no waves yet: a
    # file with waves renders on the CPU (the kernel, or its numpy fallback: same bytes).
    waves = waves_for_view(qg.render_waves(), scale)
    if waves is not None:
        dev = "cpu"
    out = render_window(means, conics, colors, x0, y0, cw, ch, device=dev, waves=waves)
    return out[:, :, 0] if qg.channels == 1 else out


def decode(data_or_path, *, scale: float = 1.0, device: str = "auto",
           crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Decode a .gsi file (bytes or path) to a uint8 array: HxW for grayscale, else HxWxC."""
    return render_gaussians(read(data_or_path), scale=scale, device=device, crop=crop)


def info(data_or_path) -> dict:
    """Header fields, Gaussian count, bytes per section and bpp of a .gsi file."""
    return gsi_format.describe(read_bytes(data_or_path))


__all__ = ["decode", "info", "read", "render_gaussians", "read_bytes", "output_size"]
