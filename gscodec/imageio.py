"""Reading images into uint8 arrays and writing files atomically.

The codec works on HxWxC uint8 arrays with C in {1, 2, 3, 4} (L, LA, RGB, RGBA). Anything
else Pillow can open is converted here, with a warning when information is lost
(palette images are expanded, 16-bit images are reduced to 8 bits). Images larger than
the format allows (MAX_SIDE pixels a side) or than Pillow will open (its decompression-bomb
limit, 2 x Image.MAX_IMAGE_PIXELS) are refused with an InputError before their pixels
are read.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .bitstream.model import MAX_SIDE
from .errors import InputError

MODES_BY_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_EXACT_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def load_image(image) -> np.ndarray:
    """Return an HxWxC uint8 array (C in 1..4) from a path, a PIL image or an array."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            with Image.open(path) as im:
                check_size(*im.size)           # from the header, before the pixels
                im.load()
                return pil_to_array(im)
        except Image.DecompressionBombError as exc:
            raise InputError(f"{path}: image too large ({exc})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path}: cannot read image ({exc})") from None
    if isinstance(image, Image.Image):
        check_size(*image.size)
        return pil_to_array(image)
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            check_size(image.shape[1], image.shape[0])
        return _array_to_hwc(image)
    raise InputError(f"cannot use an image of type {type(image).__name__} "
                     "(give a path, a PIL image or a uint8 array)")


def check_size(width: int, height: int) -> None:
    """InputError for an image larger than the format allows."""
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputError(f"image is {width}x{height}; the .gsi format allows at most "
                         f"{MAX_SIDE} pixels a side")


def pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in _EXACT_MODES:
        arr = np.asarray(im)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        target = "RGBA" if has_alpha else "RGB"
        warnings.warn(f"palette image converted to {target}", stacklevel=3)
        arr = np.asarray(im.convert(target))
    elif mode.startswith("I;16") or mode in ("I", "F"):
        warnings.warn(f"{mode} image reduced to 8-bit grayscale", stacklevel=3)
        arr = _high_depth_to_uint8(np.asarray(im), mode)
    elif mode in ("RGBa", "La"):
        target = "RGBA" if mode == "RGBa" else "LA"
        arr = np.asarray(im.convert(target))
    else:  # CMYK, YCbCr, LAB, HSV, ...
        warnings.warn(f"{mode} image converted to RGB", stacklevel=3)
        arr = np.asarray(im.convert("RGB"))
    return _array_to_hwc(arr)


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        # Floating-point images are taken as 0..1 when they fit, else stretched.
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 1.0 if (lo >= 0 and hi <= 1) else (1.0 / (hi - lo) if hi > lo else 1.0)
        off = 0.0 if (lo >= 0 and hi <= 1) else lo
        return np.clip(np.round((arr - off) * scale * 255), 0, 255).astype(np.uint8)
    return _reduce_16bit(arr)


def _reduce_16bit(arr: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535; I images are clipped to that range) to 8 bits:
    round(v * 255 / 65535), so 0 -> 0, 65535 -> 255 and v * 257 -> v."""
    v = np.clip(np.asarray(arr).astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _array_to_hwc(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        warnings.warn("16-bit image reduced to 8 bits", stacklevel=3)
        arr = _reduce_16bit(arr)
    if arr.dtype != np.uint8:
        raise InputError(f"image array must be uint8 (got {arr.dtype})")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in MODES_BY_CHANNELS:
        raise InputError(f"image array must be HxW or HxWxC with C in 1..4 (got shape {arr.shape})")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"image has no pixels (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], "L")
    return Image.fromarray(arr, MODES_BY_CHANNELS[arr.shape[2]])


def atomic_write(path, data: bytes) -> None:
    """Write bytes to path through a temporary file in the same folder and a rename, so a
    failure never leaves a partly written file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_COMMON_FORMATS = {"": "PNG", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                   ".gif": "GIF", ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM"}


def save_image(path, arr: np.ndarray, format: str | None = None) -> None:
    """Save an image atomically; the format follows the file extension (PNG if none)."""
    import io
    path = Path(path)
    # The common formats by name: Image.registered_extensions() loads every Pillow plugin,
    # which costs a fast decode's whole time again.
    fmt = format or _COMMON_FORMATS.get(path.suffix.lower()) \
        or Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    try:
        array_to_pil(arr).save(buf, format=fmt)
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: cannot save as {fmt} ({exc})") from None
    atomic_write(path, buf.getvalue())


def load_mask(mask, h: int, w: int) -> np.ndarray:
    """An HxW bool array (True = pixel missing) from a path, a PIL image or an array:
    nonzero = missing; of an image with alpha the alpha channel, else the first channel."""
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


def check_count(name: str, value, minimum: int = 0):
    """`value` as an int >= minimum (None passes through); InputError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)
