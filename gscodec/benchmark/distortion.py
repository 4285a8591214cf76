"""RGB image loading and distortion metrics (PSNR, MS-SSIM) for the rate-distortion
benchmark.

Conventions (CompressAI's): PSNR on 8-bit RGB with peak 255, one value per image,
averaged over images at each rate point; MS-SSIM from pytorch-msssim on RGB with
data_range=255 and the default 11x11 window, five scales.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

# pytorch-msssim asserts min(H, W) > (win_size - 1) * 2**4 for its five scales.
MS_SSIM_WIN = 11
MS_SSIM_MIN_SIDE = (MS_SSIM_WIN - 1) * 2 ** 4 + 1  # 161


def to_rgb_array(img) -> np.ndarray:
    """Return an HxWx3 uint8 array from a path, a PIL image or an array (HxW, HxWx1/3/4)."""
    if isinstance(img, (str, Path)):
        with Image.open(img) as im:
            im.load()
            return to_rgb_array(im)
    if isinstance(img, Image.Image):
        if img.mode != "RGB":
            if img.mode in ("RGBA", "LA") or "transparency" in img.info:
                # Drop alpha (composite on black would change pixels; the benchmark is RGB only).
                img = img.convert("RGBA").convert("RGB")
            else:
                img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8).copy()
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(f"unsupported image shape {a.shape}")
    return np.ascontiguousarray(a)


def load_rgb(path) -> np.ndarray:
    """HxWx3 uint8 of an image file: the benchmark compares RGB only (alpha dropped, gray
    repeated), unlike gscodec.imageio.load_image, which keeps the channels the codec codes."""
    return to_rgb_array(path)


def decode_with_pillow(data: bytes) -> np.ndarray:
    """Decode an encoded file (any format Pillow and its plugins read) to RGB uint8."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return to_rgb_array(im)


def bpp(nbytes: int, height: int, width: int) -> float:
    return nbytes * 8.0 / (height * width)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all RGB samples (peak 255); inf for identical images."""
    from ..metrics import psnr as _psnr
    return _psnr(to_rgb_array(a), to_rgb_array(b))


def ms_ssim_ok(height: int, width: int) -> bool:
    return min(height, width) >= MS_SSIM_MIN_SIDE


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM on RGB (pytorch-msssim); NaN when the image is too small for five scales
    (smaller side below 161 pixels) or when pytorch-msssim is not installed."""
    a = to_rgb_array(a)
    b = to_rgb_array(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if not ms_ssim_ok(a.shape[0], a.shape[1]):
        return math.nan
    try:
        import torch
        from pytorch_msssim import ms_ssim as _ms_ssim
    except ImportError:
        return math.nan
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(_ms_ssim(ta, tb, data_range=255, size_average=True, win_size=MS_SSIM_WIN))


def ms_ssim_note(height: int, width: int) -> str | None:
    if ms_ssim_ok(height, width):
        return None
    return (f"MS-SSIM undefined for {width}x{height}: pytorch-msssim needs the smaller side "
            f">= {MS_SSIM_MIN_SIDE} px for 5 scales; reported as NaN")
