"""encode / decode / info: the library entry points, tying fitting, format and rendering."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from . import format as gsi_format
from .errors import FormatError, InputError
from .fit import EFFORT_ITERATIONS, FitConfig, Fitter
from .imageio import load_image
from .model import MAX_SIDE, QuantizedGaussians
from .quantize import render_inputs
from .render import render, to_uint8

# Default number of Gaussians per 1000 pixels (Kodak 768x512: 2359 Gaussians), chosen
# by measurement on Kodak (see README); iterations come from the --effort presets.
DEFAULT_DENSITY = 6.0
STRIP_ROWS = 512          # decode renders horizontal strips so memory stays bounded


def default_gaussians(height: int, width: int, density: float = DEFAULT_DENSITY) -> int:
    return int(max(1, min(height * width, round(density * height * width / 1000.0))))


def _backend(device: str) -> str:
    """Map the user's device option to a render backend name."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (use cpu, cuda or auto)")
    if device == "cuda":
        raise InputError("device 'cuda': this build of gscodec has no CUDA rasterizer; use --device cpu")
    return "auto"


def _check_count(name: str, value, minimum: int = 0):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


PROFILES = ("gsi", "gaussianimage")


def encode(image, *, gaussians: int | None = None, bpp: float | None = None,
           quality: float | None = None, iterations: int | None = None,
           device: str = "auto", seed: int = 0, progress: bool = False,
           init: str = "structure", effort: str = "default", mask=None,
           profile: str = "gsi", adaptive: bool = False, rate_weight: float = 0.0) -> bytes:
    """Fit Gaussians to `image` and return the bytes of a .gsi file.

    image: a path, a PIL image, or an HxW / HxWxC uint8 array (C in 1..4).
    At most one of gaussians / bpp / quality chooses the size:
    gaussians: how many Gaussians (default: DEFAULT_DENSITY per 1000 pixels);
    bpp: a target file size in bits per pixel (lands within 5 %; see ratecontrol.py);
    quality: 1..100 on a geometric ladder of Gaussian densities (ratecontrol.py).
    profile: "gsi" (entropy-coded integers) or "gaussianimage" (GaussianImage's
        fixed-length scheme: fp16 positions, 6-bit Cholesky, 2x8-bit residual VQ colour).
    adaptive: two quantization classes (coarser steps for large Gaussians in flat
        regions) instead of one.
    rate_weight: weight of the rate term in the quantization-aware phase (0 = off).
    iterations: free-fit iterations (default: set by `effort`); a fifth as many
        quantization-aware iterations follow.
    effort: "fast" (400 iterations, for a laptop CPU), "default" (1200) or "max" (5000).
    mask: optional HxW array, nonzero = pixel unknown (ignored by the fit).
    """
    arr = load_image(image)
    h, w, _ = arr.shape
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InputError(f"image is {w}x{h}; the .gsi format allows at most {MAX_SIDE} pixels a side")
    n = _check_count("gaussians", gaussians, 1)
    if sum(x is not None for x in (gaussians, bpp, quality)) > 1:
        raise InputError("give at most one of gaussians, bpp and quality")
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r} (use {' or '.join(PROFILES)})")
    if bpp is not None:
        if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) \
                or not math.isfinite(bpp) or bpp <= 0:
            raise InputError(f"bpp must be a positive number (got {bpp!r})")
        if profile != "gsi":
            raise InputError("bpp targets need profile gsi")
    if quality is not None:
        from .ratecontrol import quality_density
        n = default_gaussians(h, w, quality_density(quality))
    n = default_gaussians(h, w) if n is None else n
    if not isinstance(rate_weight, (int, float)) or not 0 <= rate_weight <= 100:
        raise InputError(f"rate_weight must be a number in 0..100 (got {rate_weight!r})")
    its = _check_count("iterations", iterations, 0)
    if init not in ("structure", "random"):
        raise InputError(f"unknown init {init!r} (use structure or random)")
    if effort not in EFFORT_ITERATIONS:
        raise InputError(f"unknown effort {effort!r} (use {', '.join(EFFORT_ITERATIONS)})")
    from .quantize import QuantConfig, adaptive_config
    cfg = FitConfig(iterations=EFFORT_ITERATIONS[effort] if its is None else its, init=init,
                    seed=int(seed), backend=_backend(device), rate_weight=float(rate_weight),
                    quant=adaptive_config() if adaptive else QuantConfig())
    known_mask = _mask_array(mask, h, w) if mask is not None else None
    if known_mask is not None and profile != "gsi":
        raise InputError("masked encoding needs profile gsi (the gaussianimage profile "
                         "cannot record the mask)")
    fitter_cls = Fitter
    if known_mask is not None:
        from .inpaint import HoleAwareFitter as fitter_cls
    fitter = fitter_cls(arr, cfg, known_mask)
    try:
        if bpp is not None:
            from .ratecontrol import fit_to_size
            return fit_to_size(fitter, int(round(bpp * h * w / 8.0)), progress=progress)
        if profile == "gaussianimage":
            from .gaussianimage import quantize_gaussianimage
            p = fitter.fit_params(n, progress, quantize=False)
            return gsi_format.write(quantize_gaussianimage(fitter, p, cfg.qat_steps(),
                                                           progress=progress))
        return gsi_format.write(fitter.fit(n, progress=progress))
    except ValueError as exc:  # e.g. more Gaussians than the format allows for the size
        raise InputError(str(exc)) from None


def _mask_array(mask, h: int, w: int) -> np.ndarray:
    m = load_image(mask) if not isinstance(mask, np.ndarray) or mask.ndim == 3 else mask
    m = np.asarray(m)
    if m.ndim == 3:
        m = m[:, :, -1] if m.shape[2] in (2, 4) else m[:, :, 0]
    if m.shape != (h, w):
        raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}")
    m = m != 0
    if not m.any():
        raise InputError("mask is empty (no pixel marked missing)")
    if m.all():
        raise InputError("mask covers the whole image (no known pixel to fit)")
    return m


def _read_bytes(data_or_path) -> bytes:
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
    return gsi_format.read(_read_bytes(data_or_path))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of a rendering at `scale`: floor(side * scale + 0.5), at least 1."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise InputError(f"scale must be a positive number (got {scale!r})")
    ow = max(1, int(math.floor(width * scale + 0.5)))
    oh = max(1, int(math.floor(height * scale + 0.5)))
    if ow > MAX_SIDE or oh > MAX_SIDE:
        raise InputError(f"scale {scale} gives {ow}x{oh}; the decoder renders at most "
                         f"{MAX_SIDE} pixels a side")
    return ow, oh


def render_gaussians(qg: QuantizedGaussians, *, scale: float = 1.0, device: str = "auto",
                     crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Render decoded Gaussians to uint8 (HxW for one channel, else HxWxC).

    crop: (x, y, width, height) window of the output grid at this scale."""
    backend = _backend(device)
    ow, oh = output_size(qg.width, qg.height, scale)
    x0, y0, cw, ch = crop if crop is not None else (0, 0, ow, oh)
    if min(cw, ch) < 1 or x0 < 0 or y0 < 0 or x0 + cw > ow or y0 + ch > oh:
        raise InputError(f"crop {crop} is not inside the {ow}x{oh} output")
    # profile gsi: integers -> floats (quantize.render_inputs); profile gaussianimage:
    # the GIGaussians dequantize themselves
    means, conics, colors = qg.render_inputs() if hasattr(qg, "render_inputs") \
        else render_inputs(qg)
    # Scale s maps means to s*means and covariances to s^2*Sigma (conics / s^2).
    means = means * float(scale)
    conics = conics / float(scale) ** 2
    out = np.empty((ch, cw, qg.channels), dtype=np.uint8)
    offset = torch.tensor([float(x0), float(y0)])
    with torch.no_grad():
        for r0 in range(0, ch, STRIP_ROWS):
            rows = min(STRIP_ROWS, ch - r0)
            m = means - (offset + torch.tensor([0.0, float(r0)]))
            img = render(m, conics, colors, rows, cw, backend=backend)
            out[r0:r0 + rows] = to_uint8(img).numpy()
    return out[:, :, 0] if qg.channels == 1 else out


def decode(data_or_path, *, scale: float = 1.0, device: str = "auto",
           crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Decode a .gsi file (bytes or path) to a uint8 array: HxW for grayscale, else HxWxC."""
    return render_gaussians(read(data_or_path), scale=scale, device=device, crop=crop)


def info(data_or_path) -> dict:
    """Header fields, Gaussian count, bytes per section and bpp of a .gsi file."""
    data = _read_bytes(data_or_path)
    return gsi_format.describe(data)


__all__ = ["encode", "decode", "info", "read", "render_gaussians", "FormatError"]
