"""The `gsi` command line: encode, decode, info, bench.

Errors a user can cause print one line to stderr ("gsi: error: ...") and exit with 1;
bad usage exits with 2 (argparse). No traceback unless GSI_DEBUG=1 is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import GscodecError, InputError


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return v


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {text!r}")
        return v
    return parse


def _crop(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"crop must be X,Y,WIDTH,HEIGHT (got {text!r})")
    return parts  # type: ignore[return-value]


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where to render: cpu, cuda or auto (the GPU when present; default auto)")


def _add_mask(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", metavar="MASK.png",
                   help="mask image, same size; nonzero = missing pixel (ignored by the fit)")
    p.add_argument("--mask-from-alpha", action="store_true",
                   help="the missing pixels are those with alpha 0 (the image is then RGB)")


def _load_masked(args):
    """(image, mask or None) from --mask / --mask-from-alpha."""
    import numpy as np

    from .imageio import load_image
    image = load_image(args.input)
    mask = None
    if getattr(args, "mask_from_alpha", False):
        if args.mask:
            raise InputError("give either --mask or --mask-from-alpha, not both")
        if image.shape[2] not in (2, 4):
            raise InputError(f"{args.input}: no alpha channel (--mask-from-alpha)")
        mask = image[:, :, -1] == 0
        image = np.ascontiguousarray(image[:, :, :-1])
    elif getattr(args, "mask", None):
        mask = args.mask           # load_mask loads it and picks alpha or the first channel
    if mask is not None:
        from .imageio import load_mask
        mask = load_mask(mask, image.shape[0], image.shape[1])
    return image, mask


def _cmd_inpaint(args) -> int:
    from .imageio import save_image
    image, mask = _load_masked(args)
    if mask is None:
        raise InputError("inpaint needs --mask MASK.png or --mask-from-alpha")
    from .inpainting import inpaint  # torch: imported once the inputs are known good
    t0 = time.perf_counter()
    out = inpaint(image, mask, keep_known=not args.pure, gaussians=args.gaussians,
                  iterations=args.iterations, device=args.device, seed=args.seed,
                  progress=not args.quiet, texture=args.texture)
    try:
        save_image(args.output, out)
    except OSError as exc:
        raise InputError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    if not args.quiet:
        print(f"{args.output}: {int(mask.sum())} pixels filled, "
              f"{time.perf_counter() - t0:.1f} s")
    return 0


def _quality(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"quality must be from 1 to 100 (got {text})")
    return q


def build_parser(with_bench: bool = True) -> argparse.ArgumentParser:
    """The parser; with_bench=False leaves out the benchmark's options (importing the
    benchmark costs start-up time that decode and info should not pay)."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="gsi", description="Image codec built on 2D Gaussian splatting (.gsi files).")
    parser.add_argument("--version", action="version", version=f"gscodec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("encode", help="fit Gaussians to an image and write a .gsi file",
                       description="Fit Gaussians to an image and write a .gsi file.")
    p.add_argument("input", help="image to encode (PNG, JPEG, ... anything Pillow reads)")
    p.add_argument("-o", "--output", help="output .gsi file (default: INPUT with .gsi suffix)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--gaussians", type=_count(1), metavar="N",
                      help="number of Gaussians (default: 6 per 1000 pixels)")
    size.add_argument("--bpp", type=_positive_float, metavar="B",
                      help="target file size in bits per pixel (the file lands within 5%%)")
    size.add_argument("--quality", type=_quality, metavar="Q",
                      help="1..100: Gaussian density 6 * 2^((Q-50)/16.5) per 1000 pixels "
                           "(Q=50 is the default size; +16.5 doubles it)")
    p.add_argument("--iterations", type=_count(0), metavar="K",
                   help="fitting iterations (default: set by --effort; the gaussianimage "
                        "profile adds a fifth as many quantization-aware ones)")
    p.add_argument("--profile", choices=["gsi", "gaussianimage"], default="gsi",
                   help="gsi (default: entropy-coded integers) or gaussianimage "
                        "(GaussianImage's fixed-length scheme, fp16 positions, 6-bit "
                        "Cholesky, 2-stage residual VQ colour: a baseline)")
    p.add_argument("--adaptive", action="store_true",
                   help="two quantization classes: coarser steps for large Gaussians in "
                        "flat regions (no gain on Kodak; off by default)")
    p.add_argument("--effort", choices=["fast", "default", "max"], default="default",
                   help="fitting budget: fast (250 iterations, then the geometry and "
                        "colours rounded at once), default (1200, times (density/6)^0.8 "
                        "above 6 Gaussians per 1000 pixels, at most 2400), then 2 x 50 "
                        "re-fit steps while rounding and the colours rounded in 16 "
                        "batches, both grown by the same factor; max (5000, for a GPU), "
                        "rounded as default at density 24 (2 x 100 steps, 32 batches)")
    p.add_argument("--init", choices=["structure", "random"], default="structure",
                   help="starting placement: structure-guided (default) or random")
    p.add_argument("--tune", choices=["psnr", "ssim"], default="psnr",
                   help="what the fit optimises: psnr (squared error, default) or ssim "
                        "(MS-SSIM mixed in over the last third of the fit and the rounding's "
                        "re-fits: higher MS-SSIM, lower PSNR, a slower encode; not with a "
                        "mask)")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    _add_mask(p)

    p = sub.add_parser("inpaint", help="fill the masked pixels of an image",
                       description="Fill the pixels marked by a mask (nonzero = missing) "
                                   "by hole-aware Gaussian fitting.")
    p.add_argument("input", help="image with missing pixels")
    p.add_argument("-o", "--output", required=True, help="output image (e.g. out.png)")
    _add_mask(p)
    p.add_argument("--pure", action="store_true",
                   help="output the pure decode (do not paste the known pixels back)")
    p.add_argument("--gaussians", type=_count(1), metavar="N",
                   help="approximate budget of Gaussians placed around the hole "
                        "(default: automatic)")
    p.add_argument("--iterations", type=_count(0), metavar="K",
                   help="K > 0: fit the whole image for K iterations (the slower masked "
                        "encode) instead of the local fit around the hole")
    p.add_argument("--texture", action="store_true",
                   help="lay detail copied from the known part of the image (exemplars) over "
                        "the smooth fill: for large holes in grass, foliage or fabric; costs "
                        "PSNR (local fit only)")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")

    p = sub.add_parser("decode", help="render a .gsi file to an image",
                       description="Render a .gsi file to an image (PNG unless the "
                                   "output's extension names another format).")
    p.add_argument("input", help=".gsi file")
    p.add_argument("-o", "--output", required=True, help="output image (e.g. out.png)")
    p.add_argument("--scale", type=_positive_float, default=1.0,
                   help="render at this scale (e.g. 2 for twice the size; default 1)")
    p.add_argument("--crop", type=_crop, metavar="X,Y,W,H",
                   help="render only this window of the (scaled) output")
    _add_device(p)

    p = sub.add_parser("info", help="describe a .gsi file",
                       description="Print the header, Gaussian count, bytes per section and bpp.")
    p.add_argument("input", help=".gsi file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    bench_runner = None
    if with_bench:
        try:
            from .benchmark import runner as bench_runner
        except ImportError:  # optional benchmark dependencies missing
            bench_runner = None
    p = sub.add_parser("bench", help="rate-distortion benchmark against JPEG, WebP, ...",
                       description=(bench_runner.BENCH_DESCRIPTION if bench_runner is not None
                                    else "Rate-distortion benchmark of gsi against image codecs "
                                         "(needs the [bench] extras)."))
    if bench_runner is not None:
        bench_runner.add_arguments(p)
    p.set_defaults(_bench=bench_runner)
    return parser


def _cmd_encode(args) -> int:
    from .decoder import read, render_gaussians
    from .imageio import atomic_write
    from .metrics import psnr
    out = Path(args.output) if args.output else Path(args.input).with_suffix(".gsi")
    image, mask = _load_masked(args)
    from .encoder.api import encode  # torch: imported once the inputs are known good
    t0 = time.perf_counter()
    data = encode(image, gaussians=args.gaussians, bpp=args.bpp, quality=args.quality,
                  profile=args.profile, adaptive=args.adaptive,
                  iterations=args.iterations,
                  device=args.device, seed=args.seed, init=args.init, mask=mask, effort=args.effort,
                  tune=args.tune, progress=not args.quiet and not args.json)
    seconds = time.perf_counter() - t0
    h, w = image.shape[:2]
    qg = read(data)
    decoded = render_gaussians(qg, device=args.device).reshape(image.shape)
    psnr_db = psnr(image, decoded, None if mask is None else ~mask)
    _write(out, data, atomic_write)       # last: a failure above leaves no file behind
    summary = {"input": str(args.input), "output": str(out), "width": w, "height": h,
               "channels": qg.channels, "gaussians": qg.count, "bytes": len(data),
               "bpp": len(data) * 8 / (w * h), "psnr": psnr_db,
               "seconds": seconds}
    if args.json:   # strict JSON: an exact fit's infinite PSNR is written as null
        print(json.dumps({k: (None if isinstance(v, float) and v == float("inf") else v)
                          for k, v in summary.items()}))
    elif not args.quiet:
        print(f"{out}: {qg.count} Gaussians, {len(data)} bytes, {summary['bpp']:.4f} bpp, "
              f"PSNR {summary['psnr']:.2f} dB, {seconds:.1f} s")
    return 0


def _write(out: Path, data: bytes, writer) -> None:
    try:
        writer(out, data)
    except OSError as exc:
        raise InputError(f"{out}: cannot write ({exc.strerror or exc})") from None


def _cmd_decode(args) -> int:
    from .decoder import decode
    from .imageio import save_image
    arr = decode(args.input, scale=args.scale, device=args.device, crop=args.crop)
    try:
        save_image(args.output, arr)
    except OSError as exc:
        raise InputError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    return 0


def _cmd_info(args) -> int:
    from .decoder import info
    d = info(args.input)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{args.input}: .gsi version {d['version']}, {d['width']}x{d['height']}, "
          f"{d['channels']} channel(s), {d['count']} Gaussians")
    print(f"  {d['file_bytes']} bytes, {d['bpp']:.4f} bpp"
          + (", fitted under an inpainting mask" if d.get("masked") else ""))
    print(f"  profile {d['profile']}")
    for k, c in enumerate(d.get("classes", [])):
        print(f"  class {k}: {c['count']} Gaussians, pos_bits {c['pos_bits']}, "
              f"scale_steps {c['scale_steps']}, rot_levels {c['rot_levels']} "
              f"(rot_bias {c['rot_bias']}), "
              + (f"color_den {c['color_den']}" if len(c.get("color_dens", [])) < 2 else
                 f"color_den {'/'.join(map(str, c['color_dens']))} by area octave from "
                 f"{c['area_lo']}")
              + (f", waves: amplitude in 1/{c['wave_den']}, {c['wave_freqs']} frequencies "
                 f"from 2^({c['wave_f0']}/2) per sigma, {c['wave_phases']} phases"
                 if c.get("wave_den") else ""))
    per = d.get("bits_per_gaussian", {})
    if per:
        print("  bits per Gaussian: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    return 0


def _cmd_bench(args) -> int:
    if args._bench is None:
        raise InputError("gsi bench needs the benchmark extras: pip install 'gscodec[bench]'")
    return int(args._bench.run(args) or 0)


COMMANDS = {"encode": _cmd_encode, "decode": _cmd_decode, "info": _cmd_info, "bench": _cmd_bench,
            "inpaint": _cmd_inpaint}


_pending_warnings: list[str] = []


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Notices about the input (palette expanded, 16-bit reduced, ...) are printed when the
    # command has succeeded, so that a refusal is exactly one line; a RuntimeWarning (e.g.
    # the slow renderer fallback) concerns the run itself and is printed at once.
    if issubclass(category, RuntimeWarning):
        print(f"gsi: warning: {message}", file=sys.stderr)
    else:
        _pending_warnings.append(f"gsi: warning: {message}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_bench="bench" in argv)
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    _pending_warnings.clear()
    debug = os.environ.get("GSI_DEBUG") == "1"
    try:
        rc = COMMANDS[args.command](args)
        for text in _pending_warnings:
            print(text, file=sys.stderr)
        return rc
    except GscodecError as exc:
        if debug:
            raise
        print(f"gsi: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gsi: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("gsi: error: out of memory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
