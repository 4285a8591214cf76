"""Markdown tables for the README from a committed results folder (no re-measuring).

    python benchmarks/results_table.py benchmarks/results/kodak [--codec gsi] [--per-image]

Prints the BD-rate table of the codec against every peer measured in the same folder and
against the published GaussianImage points (from bdrate.json), then the codec's mean per
rate point (from <codec>.json), with the run's stamps. --per-image adds a table with a row
per image: the codec's PSNR minus JPEG 2000's at the same size at each of the codec's rate
points (JPEG 2000's curve interpolated in log-rate; "out" where it does not reach), and the
image's BD-rate (PSNR) against JPEG 2000.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

LABELS = {"jpeg": "JPEG (Pillow, libjpeg)", "webp": "WebP (libwebp, method 4)",
          "jpeg2000": "JPEG 2000 (OpenJPEG, mct=1)", "avif": "AVIF (libavif, speed 6)",
          "jxl": "JPEG XL (libjxl, effort 7)",
          "heic": "HEIC 4:4:4 (libheif, x265)", "heic420": "HEIC 4:2:0 (libheif, x265)",
          "gsi-gi": "gsi-gi (our fit, GaussianImage's coding)",
          "gaussianimage (published)": "GaussianImage (published Kodak points)"}


def pct(side: dict | None) -> str:
    if not side:
        return "n/a"
    if not side.get("meaningful", True) or side.get("bd_rate_percent") is None:
        return "n/a"
    return f"{side['bd_rate_percent']:+.1f} %"


def image_curve(doc: dict, image: str) -> list[tuple[float, float]]:
    return sorted((r["bpp"], r["psnr-rgb"]) for r in doc["per_image"]
                  if r["image"] == image and r.get("psnr-rgb") is not None)


def per_image_table(folder: Path, doc: dict) -> None:
    """A row per image: dB against JPEG 2000 at equal size per rate point, and BD-rate."""
    from gscodec.benchmark.bdrate import bd_rate
    j2k = json.loads((folder / "jpeg2000.json").read_text())
    points = sorted({r["density"] for r in doc["per_image"]})
    print("\n| image | " + " | ".join(f"{p:g}: bpp, dB vs JPEG 2000" for p in points)
          + " | BD-rate vs JPEG 2000 |")
    print("| --- |" + " --- |" * (len(points) + 1))
    behind = []
    for image in doc["meta"]["images"]:
        ours, ref = image_curve(doc, image), image_curve(j2k, image)
        logs = [math.log(b) for b, _ in ref]
        cells = []
        for b, q in ours:
            if not logs or not logs[0] <= math.log(b) <= logs[-1]:
                cells.append(f"{b:.3f}, out")
                continue
            d = q - float(np.interp(math.log(b), logs, [y for _, y in ref]))
            behind.append(d < -0.5)
            cells.append(f"{b:.3f}, {d:+.2f}")
        r = bd_rate([b for b, _ in ref], [q for _, q in ref],
                    [b for b, _ in ours], [q for _, q in ours])
        bd = f"{r.value:+.1f} %" if r.meaningful else "n/a"
        print(f"| {image} | " + " | ".join(cells) + f" | {bd} |")
    print(f"\n{sum(behind)} of {len(behind)} points more than 0.5 dB behind JPEG 2000.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--codec", default="gsi")
    ap.add_argument("--per-image", action="store_true",
                    help="a row per image against JPEG 2000 (needs jpeg2000.json)")
    args = ap.parse_args(argv)
    try:
        bd = json.loads((args.folder / "bdrate.json").read_text())
        doc = json.loads((args.folder / f"{args.codec}.json").read_text())
    except (OSError, ValueError) as e:
        print(f"results_table: error: {e}", file=sys.stderr)
        return 1
    meta = doc["meta"]
    print(f"{len(meta['images'])} images of {meta['dataset']}, {args.codec} at effort "
          f"{meta.get('effort')} ({meta.get('iterations')} iterations), commit "
          f"{meta['git_commit'][:7]}, encoder fingerprint {meta['encoder_fingerprint']}\n")
    print(f"| {args.codec} against | BD-rate, PSNR | BD-rate, MS-SSIM |")
    print("| --- | --- | --- |")
    for p in bd["pairs"]:
        if p["test"] != args.codec or p["anchor"] not in LABELS:
            continue
        print(f"| {LABELS[p['anchor']]} | {pct(p.get('psnr'))} | {pct(p.get('ms-ssim'))} |")
    r = doc["results"]
    print("\n| Gaussians per 1000 px | Gaussians (mean) | bpp | PSNR dB | MS-SSIM | encode s "
          "| decode ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, d in enumerate(r["density"]):
        print(f"| {d:g} | {r['gaussians_mean'][i]:.0f} | {r['bpp'][i]:.3f} | "
              f"{r['psnr-rgb'][i]:.2f} | {r['ms-ssim-rgb'][i]:.4f} | "
              f"{r['encoding_time'][i]:.0f} | {1000 * r['decoding_time'][i]:.0f} |")
    if args.per_image:
        per_image_table(args.folder, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
