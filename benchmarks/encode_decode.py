#!/usr/bin/env python
"""Encode/decode each image with gscodec and compare with Pillow's JPEG at the same size.

    python benchmarks/encode_decode.py DIR [--images N] [--gaussians N] [--iterations K]
                                           [--device auto] [--json OUT]

Per image and on average: Gaussians, file bytes, bpp, PSNR, encode seconds, decode
seconds (gscodec.decode on the bytes: file to pixels), and the JPEG (quality 1..95)
whose file size is closest to ours, with its bytes, PSNR and the size ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from gscodec.benchmark.distortion import bpp, decode_with_pillow, load_rgb, psnr  # noqa: E402
from gscodec.benchmark.peers import closest_jpeg_quality, to_rgb_array  # noqa: E402
from gscodec.benchmark.provenance import default_dataset, list_images, machine_info  # noqa: E402
from gscodec.benchmark.tasks import jsonable  # noqa: E402


def _gaussian_count(data: bytes, asked):
    try:
        import gscodec
        info = gscodec.info(data)
        for k in ("gaussians", "num_gaussians", "n_gaussians", "count", "n"):
            if k in info:
                return int(info[k])
    except Exception:
        pass
    return asked


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=None,
                    help="folder of PNG images (default: shared Kodak)")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--gaussians", type=int, default=None,
                    help="Gaussians per image (default: codec's)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, metavar="OUT",
                    help="write the rows and the means as JSON")
    args = ap.parse_args(argv)

    folder = Path(args.dir) if args.dir else default_dataset()
    if folder is None or not folder.is_dir():
        print("error: give a dataset folder", file=sys.stderr)
        return 2
    images = list_images(folder, args.images)
    if not images:
        print(f"error: no PNG images in {folder}", file=sys.stderr)
        return 2
    import gscodec

    rows = []
    hdr = (f"{'image':<16} {'Gauss':>7} {'bytes':>8} {'bpp':>6} {'PSNR':>6} {'enc s':>7} "
           f"{'dec s':>7} | "
           f"{'JPEG q':>6} {'bytes':>8} {'PSNR':>6} {'size ratio':>10}")
    print(hdr)
    print("-" * len(hdr))
    for p in images:
        rgb = load_rgb(p)
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        data = bytes(gscodec.encode(rgb, gaussians=args.gaussians, iterations=args.iterations,
                                    device=args.device, seed=0, progress=False))
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = to_rgb_array(gscodec.decode(data, device=args.device))
        t_dec = time.perf_counter() - t0
        q, jdata = closest_jpeg_quality(rgb, len(data))
        jrec = decode_with_pillow(jdata)
        row = {"image": p.name, "width": w, "height": h,
               "gaussians": _gaussian_count(data, args.gaussians), "bytes": len(data),
               "bpp": bpp(len(data), h, w), "psnr": psnr(rgb, rec), "encode_s": t_enc,
               "decode_s": t_dec,
               "jpeg_quality": q, "jpeg_bytes": len(jdata), "jpeg_bpp": bpp(len(jdata), h, w),
               "jpeg_psnr": psnr(rgb, jrec), "jpeg_size_ratio": len(jdata) / len(data)}
        rows.append(row)
        g = row["gaussians"]
        print(f"{p.name:<16} {g if g is not None else '?':>7} {row['bytes']:>8} {row['bpp']:>6.3f} "
              f"{row['psnr']:>6.2f} {t_enc:>7.2f} {t_dec:>7.3f} | {q:>6} {row['jpeg_bytes']:>8} "
              f"{row['jpeg_psnr']:>6.2f} {row['jpeg_size_ratio']:>10.3f}", flush=True)

    def mean(k):
        v = [r[k] for r in rows if isinstance(r[k], (int, float)) and math.isfinite(r[k])]
        return float(np.mean(v)) if v else math.nan

    avg = {k: mean(k) for k in ("gaussians", "bytes", "bpp", "psnr", "encode_s", "decode_s",
                                "jpeg_bytes", "jpeg_bpp", "jpeg_psnr", "jpeg_size_ratio")}
    print("-" * len(hdr))
    print(f"{'mean':<16} {avg['gaussians']:>7.0f} {avg['bytes']:>8.0f} {avg['bpp']:>6.3f} "
          f"{avg['psnr']:>6.2f} "
          f"{avg['encode_s']:>7.2f} {avg['decode_s']:>7.3f} | {'':>6} {avg['jpeg_bytes']:>8.0f} "
          f"{avg['jpeg_psnr']:>6.2f} {avg['jpeg_size_ratio']:>10.3f}")
    if args.json:
        out = {"rows": rows, "mean": avg, "meta": {"command": " ".join(sys.argv),
                                                   "dataset": str(folder),
               "gaussians": args.gaussians, "iterations": args.iterations, "device": args.device,
               "machine": machine_info()}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(jsonable(out), f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
