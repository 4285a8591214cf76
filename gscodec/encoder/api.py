"""`encode`: an image -> the bytes of a .gsi file. Checks the options, builds the objective
(`objective.py`, or `masked.py` with a mask) and runs the encoder's pipeline
(`pipeline.py`), or rate control (`ratecontrol.py`) for a target size."""
from __future__ import annotations

import math

from ..errors import InputError
from ..imageio import check_count, load_image, load_mask
from ..render.kernel_torch import release_buffers
from .config import EFFORT_PRESETS, FitConfig
from .objective import Objective, SSIMObjective
from .pipeline import TAILS, Pipeline, encode_pipeline, fit_stages
from .quantize import QuantConfig, adaptive_config
from .stages import EncodeState

# Default number of Gaussians per 1000 pixels (Kodak 768x512: 2359 Gaussians), chosen
# by measurement on Kodak; iterations come from the --effort presets.
DEFAULT_DENSITY = 6.0
PROFILES = ("gsi", "gaussianimage")
TUNES = ("psnr", "ssim")


def default_gaussians(height: int, width: int, density: float = DEFAULT_DENSITY) -> int:
    return int(max(1, min(height * width, round(density * height * width / 1000.0))))


def encode_backend(device: str) -> str:
    """The render backend the fit uses for the user's device option."""
    from ..decoder import resolve_device
    return "triton" if resolve_device(device, encoding=True) == "cuda" else "auto"


def encode(image, *, gaussians: int | None = None, bpp: float | None = None,
           quality: float | None = None, iterations: int | None = None,
           device: str = "auto", seed: int = 0, progress: bool = False,
           init: str = "structure", effort: str = "default", mask=None,
           profile: str = "gsi", adaptive: bool = False, tune: str = "psnr") -> bytes:
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
    iterations: free-fit iterations (default: set by `effort`); the gaussianimage profile
        adds a fifth as many quantization-aware iterations.
    effort: "fast", "default" or "max" (fit.EFFORT_PRESETS).
    tune: "psnr" (the fit minimises the squared error) or "ssim" (MS-SSIM mixed in:
        objective.SSIMObjective; slower, higher MS-SSIM, lower PSNR). Not with a mask.
    device: "cpu", "cuda" (the Triton rasterizer) or "auto" (cuda when available).
    mask: optional HxW array, nonzero = pixel unknown (ignored by the fit).
    """
    arr = load_image(image)            # (refuses images larger than the format allows)
    h, w, _ = arr.shape
    n = check_count("gaussians", gaussians, 1)
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
    cfg = fit_config(iterations=iterations, init=init, effort=effort, seed=seed,
                     device=device, adaptive=adaptive, tune=tune)
    known_mask = load_mask(mask, h, w) if mask is not None else None
    if known_mask is not None and profile != "gsi":
        raise InputError("masked encoding needs profile gsi (the gaussianimage profile "
                         "cannot record the mask)")
    if known_mask is not None and tune != "psnr":
        raise InputError("tune ssim needs an image without a mask (MS-SSIM's windows would "
                         "straddle the unknown pixels)")
    if known_mask is not None:
        from .masked import HoleAwareObjective
        objective = HoleAwareObjective(arr, cfg, known_mask)
    else:
        objective = make_objective(arr, cfg)
    state = EncodeState.new(objective, cfg.seed)
    try:
        if bpp is not None:
            from .ratecontrol import fit_to_size
            return fit_to_size(objective, state, int(round(bpp * h * w / 8.0)),
                               progress=progress)
        return encode_pipeline(cfg, n, profile).run(objective, state, progress).data
    except ValueError as exc:  # e.g. more Gaussians than the format allows for the size
        raise InputError(str(exc)) from None
    finally:
        release_buffers()   # a library process keeps none of the kernel's weight buffers


def make_objective(image, cfg: FitConfig) -> Objective:
    """The objective of an unmasked image for cfg.tune."""
    return SSIMObjective(image, cfg) if cfg.tune == "ssim" else Objective(image, cfg)


def fit_config(*, iterations=None, init="structure", effort="default", seed=0,
               device="auto", adaptive=False, tune="psnr") -> FitConfig:
    """The fit's configuration for `encode`'s options (checked: InputError)."""
    its = check_count("iterations", iterations, 0)
    if init not in ("structure", "random"):
        raise InputError(f"unknown init {init!r} (use structure or random)")
    if tune not in TUNES:
        raise InputError(f"unknown tune {tune!r} (use {' or '.join(TUNES)})")
    if effort not in EFFORT_PRESETS:
        raise InputError(f"unknown effort {effort!r} (use {', '.join(EFFORT_PRESETS)})")
    preset = dict(EFFORT_PRESETS[effort])
    if its is not None:     # an explicit count is the count at every density
        preset.update(iterations=its, iterations_exponent=0.0)
    return FitConfig(**preset, init=init, seed=int(seed), backend=encode_backend(device),
                     quant=adaptive_config() if adaptive else QuantConfig(), tune=tune)


def encode_profiles(image, profiles=PROFILES, *, gaussians: int | None = None,
                    iterations: int | None = None, effort: str = "default", seed: int = 0,
                    device: str = "auto", init: str = "structure", tune: str = "psnr") -> dict:
    """One image in several profiles from one free fit: {profile: (bytes, seconds)}.

    Each file is byte-identical to `encode(image, profile=..., ...)` with the same options:
    the free fit is the same stages, and each profile's tail (`pipeline.TAILS`) runs on a
    fork of its state (the generator where the free fit left it). `seconds` is the shared
    free fit plus that profile's own tail: what a separate encode would take. The
    benchmark uses this to measure gsi and gsi-gi for the cost of about one encode."""
    import time
    arr = load_image(image)
    h, w, _ = arr.shape
    for prof in profiles:
        if prof not in PROFILES:
            raise InputError(f"unknown profile {prof!r} (use {' or '.join(PROFILES)})")
    n = check_count("gaussians", gaussians, 1)
    n = default_gaussians(h, w) if n is None else n
    cfg = fit_config(iterations=iterations, init=init, effort=effort, seed=seed, device=device,
                     tune=tune)
    objective = make_objective(arr, cfg)
    try:
        t0 = time.perf_counter()
        fitted = Pipeline(fit_stages(cfg, n)).run(objective, EncodeState.new(objective, seed))
        t_fit = time.perf_counter() - t0
        out = {}
        for prof in profiles:
            t0 = time.perf_counter()
            state = Pipeline(TAILS[prof](cfg, n)).run(objective, fitted.fork())
            out[prof] = (state.data, t_fit + time.perf_counter() - t0)
        return out
    except ValueError as exc:
        raise InputError(str(exc)) from None
    finally:
        release_buffers()


__all__ = ["encode", "encode_profiles", "default_gaussians", "DEFAULT_DENSITY", "PROFILES",
           "TUNES"]
