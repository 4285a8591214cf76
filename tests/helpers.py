"""Shared test generators and checks (imported by the test modules; no test module
imports another)."""
from __future__ import annotations

import numpy as np
from PIL import Image

import gscodec
from gscodec.metrics import psnr


# ---- generated pictures -------------------------------------------------------------------
def blobs_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """HxWxC uint8: a sum of six wide blobs, easy to fit with few Gaussians."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, c))
    for _ in range(6):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.15, 0.4) * max(h, w)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        img += rng.uniform(0.1, 0.5, c) * blob[..., None]
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def waves_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: three sinusoids across the image plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * x * y + 1)], -1)
    img = 0.5 + 0.4 * img + 0.03 * rng.standard_normal((h, w, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def spots_image(w: int = 32, h: int = 24, seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: six small coloured blobs (sigma 3 to 10 pixels), normalised to 255."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for _ in range(6):
        cx, cy, s = g.uniform(0, w), g.uniform(0, h), g.uniform(3, 10)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        img += g.uniform(0, 1, 3) * blob[..., None]
    return (img / img.max() * 255).clip(0, 255).astype(np.uint8)


# ---- every Pillow mode --------------------------------------------------------------------
# "PT" is mode P with a transparent palette entry.
MODES = ["1", "L", "LA", "P", "PT", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr"]
# what the codec makes of each mode (gscodec.imageio): output mode of decode
CODEC_MODE = {"1": "L", "L": "L", "LA": "LA", "P": "RGB", "PT": "RGBA", "RGB": "RGB",
              "RGBA": "RGBA", "I;16": "L", "I": "L", "F": "L", "CMYK": "RGB", "YCbCr": "RGB"}


def mode_image(mode: str, w: int, h: int) -> Image.Image:
    """A smooth picture in `mode` (one transparent pixel where the mode has alpha)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 128 + 90 * np.sin(xx / 4.0 + 0.3) * np.cos(yy / 5.0 + 0.2)
    rgb = np.stack([base, 255 - base, 128 + 0.5 * (base - 128) * np.cos(xx / 3.0)], -1)
    g8 = np.round(base).astype(np.uint8)
    rgb8 = np.round(rgb).astype(np.uint8)
    alpha = np.full((h, w), 255, np.uint8)
    alpha[h // 2, w // 2] = 0
    if mode == "1":
        return Image.fromarray(g8).convert("1", dither=Image.Dither.NONE)
    if mode == "L":
        return Image.fromarray(g8)
    if mode == "LA":
        return Image.merge("LA", [Image.fromarray(g8), Image.fromarray(alpha)])
    if mode in ("P", "PT"):
        return _palette_image(rgb8, mode == "PT")
    if mode == "RGB":
        return Image.fromarray(rgb8)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb8, alpha]))
    if mode == "I;16":
        return Image.fromarray((base * 257).round().astype(np.uint16))
    if mode == "I":
        return Image.fromarray((base * 257).round().astype(np.int32))
    if mode == "F":
        return Image.fromarray((base / 255).astype(np.float32))
    return Image.fromarray(rgb8).convert(mode)   # CMYK, YCbCr


def _palette_image(rgb8: np.ndarray, transparent: bool) -> Image.Image:
    """Mode P with 8 colours; with `transparent` the centre pixel gets its own palette
    entry, transparent."""
    h, w = rgb8.shape[:2]
    im = Image.fromarray(rgb8).quantize(8)
    if transparent:
        arr = np.asarray(im).copy()
        pal = (im.getpalette() + [0] * 24)[:24]
        pal += pal[3 * arr[h // 2, w // 2]:3 * arr[h // 2, w // 2] + 3]
        arr[h // 2, w // 2] = 8
        im = Image.frombytes("P", (w, h), arr.tobytes())
        im.putpalette(pal)
        im.info["transparency"] = 8
    return im


def as_converted(mode: str, im: Image.Image) -> np.ndarray:
    """The input as the codec documents its conversion (gscodec.imageio): HxWxC uint8."""
    if mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode in ("P", "PT"):
        arr = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
    elif mode in ("I;16", "I"):     # 16-bit samples: round(v * 255 / 65535)
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        arr = ((v * 255 + 32767) // 65535).astype(np.uint8)
    elif mode == "F":               # 0..1 floats
        arr = np.round(np.clip(np.asarray(im), 0, 1) * 255).astype(np.uint8)
    elif mode in ("CMYK", "YCbCr"):
        arr = np.asarray(im.convert("RGB"))
    else:
        arr = np.asarray(im)
    return arr.reshape(im.size[1], im.size[0], -1)


# ---- checks -------------------------------------------------------------------------------
def flat_psnr(ref: np.ndarray, known: np.ndarray | None = None) -> float:
    """PSNR of the flat mean colour: any fit must beat it."""
    sel = ref if known is None else ref[known]
    flat = np.broadcast_to(np.round(sel.reshape(-1, ref.shape[-1]).mean(0)), ref.shape)
    return psnr(ref, flat.astype(np.uint8), known)


def decoded(path) -> np.ndarray:
    """The CPU decode of a .gsi file as HxWxC."""
    arr = gscodec.decode(path, device="cpu")
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def assert_fits(ref, out, known=None, margin=3.0, cap=20.0) -> float:
    """PSNR of `out` against `ref` (HxWxC), asserted above that of the flat mean colour
    plus `margin` (or above `cap` dB): a fit, not a wrong conversion (those land below
    10 dB)."""
    if known is not None and known.all():
        known = None
    p = psnr(ref, out, known)
    assert p > min(flat_psnr(ref, known) + margin, cap), (p, flat_psnr(ref, known))
    return p
