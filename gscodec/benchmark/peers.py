"""Codec adapters for the rate-distortion benchmark.

Every adapter turns an HxWx3 uint8 array and one rate point into the bytes of a real
file, and turns those bytes back into pixels.  The peers (JPEG, WebP, JPEG 2000, AVIF,
JPEG XL, HEIC) go through Pillow and are decoded back from their bytes with Pillow, never
from the encoder's in-memory image.  A peer whose Pillow support is missing is reported
by ``unavailable()`` and skipped by the runner, never substituted.

Peers run single-threaded (AVIF ``max_threads=1``, JPEG XL ``num_threads=1``, HEIC one x265
thread and one decoding thread) so that their encode/decode seconds are comparable between
runs and between parallel jobs.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, features

from .distortion import decode_with_pillow, to_rgb_array


def encoder_fingerprint() -> str:
    """First 12 hex digits of the SHA-256 of the code that makes and reads the bytes: the
    encoder, the bitstream, the renderers, the decoder and the kernels (not the CLI, the
    benchmark or the applications). Comments, docstrings and blank lines do not count, so
    a comment fix does not invalidate a resumable run's cache; any change to the code does."""
    import hashlib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    files = [root / "decoder.py"] + sorted(root.glob("bitstream/*.py")) + \
        sorted(root.glob("encoder/*.py")) + sorted(root.glob("render/*.py")) + \
        sorted((root.parent / "csrc").glob("*.cpp")) + sorted((root.parent / "csrc").glob("*.h"))
    for f in files:
        h.update(f.name.encode())
        text = f.read_text(encoding="utf-8")
        h.update((_python_code(text) if f.suffix == ".py" else _c_code(text)).encode())
    return h.hexdigest()[:12]


def _python_code(text: str) -> str:
    """The program of a Python source without comments and docstrings (its AST dump)."""
    import ast
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _c_code(text: str) -> str:
    """A C/C++ source without comments, one token run per line (string literals kept)."""
    import re
    pattern = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
    code = pattern.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)
    return "\n".join(" ".join(line.split()) for line in code.splitlines() if line.strip())


ALL_CODECS = ("gsi", "jpeg", "webp", "jpeg2000", "avif", "jxl", "heic", "heic420", "gsi-gi")
# Not run unless asked for (--codecs): gsi fitted for MS-SSIM (a second full set of fits).
EXTRA_CODECS = ("gsi-ssim",)
DEFAULT_DENSITIES = (2.0, 4.0, 8.0, 16.0)  # Gaussians per 1000 pixels


class Codec:
    """Base adapter.  ``points`` are the codec's own knob values (quality, target bpp,
    Gaussian density), sorted from low to high rate."""

    name = "?"
    label = "?"
    point_name = "quality"
    description = ""
    default_points: tuple = ()

    def __init__(self, points=None):
        self.points = [self._norm(p)
                       for p in (points if points is not None else self.default_points)]

    @staticmethod
    def _norm(p):
        p = float(p)
        return int(p) if p.is_integer() else p

    def unavailable(self) -> str | None:
        """None when usable, else the reason it is not."""
        return None

    def settings(self) -> dict:
        """Options that change the bytes; part of the cache key."""
        return {}

    def encode(self, rgb: np.ndarray, point) -> tuple[bytes, dict]:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        return decode_with_pillow(data)


class _PillowCodec(Codec):
    fmt = "?"
    feature: str | None = None

    def unavailable(self):
        if self.feature is not None:
            try:
                ok = features.check(self.feature)
            except ValueError:
                ok = False
            if not ok:
                return f"Pillow {Image.__version__} was built without {self.feature} support"
        return None

    def save_kwargs(self, point, rgb) -> dict:
        raise NotImplementedError

    def settings(self):
        kw = self.save_kwargs(self.points[0] if self.points else 50, np.zeros((8, 8, 3), np.uint8))
        kw.pop("quality", None)
        kw.pop("quality_layers", None)
        return kw

    def encode(self, rgb, point):
        buf = io.BytesIO()
        Image.fromarray(to_rgb_array(rgb), "RGB").save(buf, self.fmt,
                                                       **self.save_kwargs(point, rgb))
        return buf.getvalue(), {}


class JPEG(_PillowCodec):
    name, label, fmt, feature = "jpeg", "JPEG", "JPEG", "jpg"
    description = "JPEG via Pillow (libjpeg), 4:2:0, optimize=False, quality sweep"
    default_points = (2, 5, 10, 20, 30, 50, 70, 85, 92)

    def save_kwargs(self, point, rgb):
        return {"quality": int(point)}


class WebP(_PillowCodec):
    name, label, fmt, feature = "webp", "WebP", "WEBP", "webp"
    description = "WebP (lossy) via Pillow (libwebp), method=4, quality sweep"
    default_points = (0, 5, 10, 20, 35, 50, 70, 85, 95)

    def save_kwargs(self, point, rgb):
        return {"quality": int(point), "method": 4, "lossless": False}


class JPEG2000(_PillowCodec):
    name, label, fmt, feature = "jpeg2000", "JPEG 2000", "JPEG2000", "jpg_2000"
    point_name = "target_bpp"
    description = ("JPEG 2000 via Pillow (OpenJPEG), irreversible 9/7 wavelet with ICT (mct=1), "
                   "one quality layer at a target rate (quality_mode='rates')")
    default_points = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)

    def save_kwargs(self, point, rgb):
        # OpenJPEG's "rates" are compression ratios against the raw 24-bit samples.
        ratio = 24.0 / float(point)
        return {"quality_mode": "rates", "quality_layers": [ratio], "irreversible": True, "mct": 1}


class AVIF(_PillowCodec):
    name, label, fmt, feature = "avif", "AVIF", "AVIF", "avif"
    description = "AVIF via Pillow (libavif), 4:2:0, speed=6, one thread, quality sweep"
    default_points = (1, 10, 20, 30, 40, 50, 60, 75, 90)

    def save_kwargs(self, point, rgb):
        return {"quality": int(point), "speed": 6, "subsampling": "4:2:0", "max_threads": 1}


class JXL(_PillowCodec):
    name, label, fmt, feature = "jxl", "JPEG XL", "JXL", None
    description = "JPEG XL via pillow-jxl-plugin (libjxl), effort=7, one thread, quality sweep"
    default_points = (1, 10, 20, 35, 50, 65, 80, 90)

    def unavailable(self):
        try:
            import pillow_jxl  # noqa: F401  (registers the JXL plugin)
        except ImportError:
            return "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
        return None

    def save_kwargs(self, point, rgb):
        return {"quality": int(point), "effort": 7, "num_threads": 1}

    def encode(self, rgb, point):
        import pillow_jxl  # noqa: F401  (registers "JXL" with Pillow in this process)
        return super().encode(rgb, point)

    def decode(self, data):
        import pillow_jxl  # noqa: F401
        return decode_with_pillow(data)


def _pillow_heif():
    """pillow-heif with its Pillow plugin registered (HEIF read and write) and one decoding
    thread; None when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return None
    pillow_heif.options.DECODE_THREADS = 1
    pillow_heif.register_heif_opener()
    return pillow_heif


class HEIC(_PillowCodec):
    """HEVC intra in a HEIF file (libheif with x265), the codec of BPG and of phone photos.
    libheif's x265 settings as they come (preset slow, tune ssim); x265 on one thread
    (pools=1: the same bytes as its default thread pool). The benchmark hands every peer
    RGB (a grayscale image with its channels repeated); x265 then codes a flat chroma,
    which costs under 0.2 % over a monochrome file (docs/experiments.md, Benchmark,
    2026-12-05 HEIC peer)."""

    name, label, fmt = "heic", "HEIC (HEVC 4:4:4)", "HEIF"
    chroma = 444
    description = ("HEVC intra via pillow-heif (libheif, x265 preset slow, tune ssim), 4:4:4, "
                   "one thread, quality sweep")
    # About 0.05 to 1.6 bpp on Kodak (docs/experiments.md, Benchmark, 2026-12-05 HEIC peer).
    default_points = (1, 5, 10, 15, 20, 25, 30, 40, 50)

    def unavailable(self):
        heif = _pillow_heif()
        if heif is None:
            return "pillow-heif is not installed (pip install pillow-heif)"
        if not heif.libheif_info().get("HEIF"):
            return f"pillow-heif's libheif {heif.libheif_version()} has no HEVC encoder"
        return None

    def save_kwargs(self, point, rgb):
        # (a new dict per call: pillow-heif writes the chroma into enc_params)
        return {"quality": int(point), "chroma": self.chroma, "enc_params": {"x265:pools": "1"}}

    def encode(self, rgb, point):
        _pillow_heif()
        return super().encode(rgb, point)

    def decode(self, data):
        _pillow_heif()
        return decode_with_pillow(data)


class HEIC420(HEIC):
    name, label = "heic420", "HEIC (HEVC 4:2:0)"
    chroma = 420
    description = ("HEVC intra via pillow-heif (libheif, x265 preset slow, tune ssim), 4:2:0, "
                   "one thread, quality sweep")


class GSI(Codec):
    """Our codec through the public API: gscodec.encode / gscodec.decode."""

    name, label = "gsi", "GSI (ours)"
    point_name = "density"
    description = ("gscodec 2D Gaussian splatting codec; rate points are Gaussian densities "
                   "(Gaussians per 1000 pixels), N = round(density*W*H/1000); real .gsi bytes")
    default_points = DEFAULT_DENSITIES

    def __init__(self, points=None, iterations=None, device="auto", seed=0, effort="default"):
        super().__init__(points)
        self.iterations = iterations
        self.device = device
        self.seed = seed
        self.effort = effort

    def unavailable(self):
        try:
            import gscodec
        except Exception as e:  # pragma: no cover - depends on the tree
            return f"gscodec does not import: {e!r}"
        missing = [f for f in ("encode", "decode") if not callable(getattr(gscodec, f, None))]
        if missing:
            return f"gscodec has no {', '.join(missing)}() yet"
        return None

    profile = "gsi"
    tune = "psnr"

    def settings(self):
        # The encoder's fingerprint is part of the cache key, so that a resumed run never
        # mixes points from an older encoder with new ones. (tune only when not the default,
        # so that the keys of the psnr rows stay those of earlier runs.)
        s = {"iterations": self.iterations, "effort": self.effort, "seed": self.seed,
             "profile": self.profile, "encoder": encoder_fingerprint()}
        if self.tune != "psnr":
            s["tune"] = self.tune
        return s

    @staticmethod
    def gaussians_for(density, height, width) -> int:
        return max(1, int(round(float(density) * width * height / 1000.0)))

    def encode(self, rgb, point):
        import gscodec
        h, w = rgb.shape[:2]
        n = self.gaussians_for(point, h, w)
        data = gscodec.encode(rgb, gaussians=n, iterations=self.iterations, effort=self.effort,
                              device=self.device, seed=self.seed, progress=False,
                              profile=self.profile, tune=self.tune)
        return bytes(data), self._extra(data, n)

    def _extra(self, data, n) -> dict:
        import gscodec
        extra = {"gaussians": n, "device": self.device}
        try:  # the count actually written (the encoder may prune)
            extra["gaussians_in_file"] = int(gscodec.info(bytes(data))["count"])
        except Exception:
            pass
        return extra

    def encode_profiles(self, rgb, point, profiles):
        """Several profiles from one free fit (gscodec.encoder.encode_profiles): the same
        bytes as `encode` in each; {profile: (bytes, extra, seconds)}, where seconds is the
        shared fit plus that profile's own tail (a separate encode's time)."""
        from gscodec.encoder.api import encode_profiles
        h, w = rgb.shape[:2]
        n = self.gaussians_for(point, h, w)
        out = encode_profiles(rgb, profiles, gaussians=n, iterations=self.iterations,
                              effort=self.effort, device=self.device, seed=self.seed,
                              tune=self.tune)
        return {prof: (data, self._extra(data, n), secs) for prof, (data, secs) in out.items()}

    def decode(self, data):
        import gscodec
        return to_rgb_array(gscodec.decode(data, device=self.device))


class GSIGaussianImage(GSI):
    """Our fitting with GaussianImage's fixed-length compression (--profile gaussianimage):
    the same-harness GaussianImage baseline."""

    name, label = "gsi-gi", "GSI, GaussianImage profile"
    description = ("gscodec fitting + GaussianImage's scheme (fp16 positions, 6-bit Cholesky, "
                   "2-stage residual VQ colour, fixed-length bits); real .gsi bytes")
    profile = "gaussianimage"


class GSISSIM(GSI):
    """Our codec fitted for MS-SSIM (`gscodec.encode(..., tune="ssim")`): its own row, so
    that one run compares it with gsi and the peers."""

    name, label = "gsi-ssim", "GSI, tune ssim"
    description = ("gscodec 2D Gaussian splatting codec fitted with MS-SSIM mixed into the "
                   "loss (--tune ssim); rate points are Gaussian densities; real .gsi bytes")
    tune = "ssim"


GSI_CODECS = ("gsi", "gsi-gi", "gsi-ssim")   # codecs whose rate points are Gaussian densities

_REGISTRY: dict[str, Callable[..., Codec]] = {
    "jpeg": JPEG, "webp": WebP, "jpeg2000": JPEG2000, "avif": AVIF, "jxl": JXL, "heic": HEIC,
    "heic420": HEIC420, "gsi": GSI, "gsi-gi": GSIGaussianImage, "gsi-ssim": GSISSIM,
}
ALIASES = {"j2k": "jpeg2000", "jp2": "jpeg2000", "jpegxl": "jxl", "jpeg-xl": "jxl", "ours": "gsi",
           "gaussianimage": "gsi-gi", "hevc": "heic", "heif": "heic"}


def canonical(name: str) -> str:
    n = name.strip().lower()
    n = ALIASES.get(n, n)
    if n not in _REGISTRY:
        raise ValueError(f"unknown codec {name!r}; choose from "
                         f"{', '.join(ALL_CODECS + EXTRA_CODECS)}")
    return n


def make_codec(name: str, points=None, **gsi_options) -> Codec:
    name = canonical(name)
    if name in GSI_CODECS:
        return _REGISTRY[name](points, **gsi_options)
    return _REGISTRY[name](points)


def closest_jpeg_quality(rgb: np.ndarray, target_bytes: int, qualities=range(1, 96)):
    """The JPEG (Pillow) quality in 1..95 whose file size is closest to ``target_bytes``.
    Returns (quality, bytes)."""
    codec = JPEG()
    best = None
    for q in qualities:
        data, _ = codec.encode(rgb, q)
        d = abs(len(data) - target_bytes)
        if best is None or d < best[0]:
            best = (d, q, data)
    return best[1], best[2]
