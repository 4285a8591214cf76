"""Markdown tables for the README from a committed results folder (no re-measuring).

    python benchmarks/results_table.py benchmarks/results/kodak [--codec gsi]

Prints the BD-rate table of the codec against every peer measured in the same folder and
against the published GaussianImage points (from bdrate.json), then the codec's mean per
rate point (from <codec>.json), with the run's stamps.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABELS = {"jpeg": "JPEG (Pillow, libjpeg)", "webp": "WebP (libwebp, method 4)",
          "jpeg2000": "JPEG 2000 (OpenJPEG, mct=1)", "avif": "AVIF (libavif, speed 6)",
          "jxl": "JPEG XL (libjxl, effort 7)", "gsi-gi": "gsi-gi (our fit, GaussianImage's coding)",
          "gaussianimage (published)": "GaussianImage (published Kodak points)"}


def pct(side: dict | None) -> str:
    if not side:
        return "n/a"
    if not side.get("meaningful", True) or side.get("bd_rate_percent") is None:
        return "n/a"
    return f"{side['bd_rate_percent']:+.1f} %"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--codec", default="gsi")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
