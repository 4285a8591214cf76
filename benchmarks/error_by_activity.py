"""Where gsi's error is, against JPEG 2000 at the same size: one gsi encode per image (default
effort, --density Gaussians per 1000 pixels), Pillow's JPEG 2000 (OpenJPEG, mct=1) at the
file's bpp, and the squared error of each split by the local activity of the original (the
standard deviation of the luma in 7x7 windows, in 8-bit levels); then the Gaussians of the
file classed by the activity at their centre, with their median sizes. Prints the tables and
writes JSON (docs/experiments.md, Primitives and the loss, 2026-12-06 fourth session).

    python benchmarks/error_by_activity.py --images kodim16,kodim12 --density 24 \\
        --json /tmp/activity.json

An image is a path to a PNG or a Kodak name (kodimNN, in `gsi bench`'s default dataset).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)   # activity classes, 8-bit levels
WINDOW = 7


def box_mean(a: np.ndarray, k: int = WINDOW) -> np.ndarray:
    """Mean over k x k windows (k odd), edges mirrored (scipy's uniform_filter, 'reflect')."""
    r = k // 2
    p = np.pad(a, r, mode="symmetric")
    c = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    c[1:, 1:] = p.cumsum(0).cumsum(1)
    h, w = a.shape
    return (c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]) / (k * k)


def activity(rgb: np.ndarray) -> np.ndarray:
    """Standard deviation of the luma (BT.601) in WINDOW x WINDOW windows, per pixel."""
    y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    var = box_mean(y * y) - box_mean(y) ** 2
    return np.sqrt(np.maximum(var, 0.0))


def jpeg2000_at(rgb: np.ndarray, bpp: float) -> tuple[np.ndarray, float]:
    """The benchmark's JPEG 2000 peer (`gsi bench`'s settings) at about `bpp`: (decoded,
    its bpp)."""
    from gscodec.benchmark.peers import JPEG2000
    codec = JPEG2000()
    data, _ = codec.encode(rgb, bpp)
    return codec.decode(data)[:, :, :3], len(data) * 8 / (rgb.shape[0] * rgb.shape[1])


def classes(act: np.ndarray, img: np.ndarray, dec: dict) -> list[dict]:
    """Per activity class: its share of the pixels, each codec's MSE there and share of its
    total squared error."""
    err = {k: ((v.astype(np.float64) - img) ** 2).mean(-1) for k, v in dec.items()}
    rows = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        m = (act >= lo) & (act < hi)
        row = {"activity": [lo, None if math.isinf(hi) else hi], "pixels": float(m.mean())}
        for k, e in err.items():
            row[f"{k}_mse"] = float(e[m].mean()) if m.any() else None
            row[f"{k}_share"] = float(e[m].sum() / e.sum()) if e.sum() > 0 else None
        rows.append(row)
    return rows


def gaussians_by_activity(act: np.ndarray, data: bytes) -> list[dict]:
    """The file's Gaussians classed by the activity at their centre: share, count per 1000
    pixels of the class, median sigmas (major, minor) in pixels."""
    from gscodec.decoder import read
    means, sigma, _, _ = read(data).dequantize()
    h, w = act.shape
    x = np.clip(means[:, 0].astype(int), 0, w - 1)
    y = np.clip(means[:, 1].astype(int), 0, h - 1)
    a = act[y, x]
    rows = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        g, px = (a >= lo) & (a < hi), (act >= lo) & (act < hi)
        rows.append({"activity": [lo, None if math.isinf(hi) else hi],
                     "gaussians": float(g.mean()) if len(a) else 0.0,
                     "per_1000_px": 1000.0 * g.sum() / max(1, px.sum()),
                     "sigma_major": float(np.median(sigma[g, 0])) if g.any() else None,
                     "sigma_minor": float(np.median(sigma[g, 1])) if g.any() else None})
    return rows


def _cls(row) -> str:
    lo, hi = row["activity"]
    return f"{lo:g}-{hi:g}" if hi is not None else f">= {lo:g}"


def _num(v, spec="8.2f") -> str:
    return format(v, spec) if v is not None else "n/a".rjust(int(spec.split(".")[0]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="comma-separated PNG paths or Kodak names")
    ap.add_argument("--density", type=float, default=24.0,
                    help="gsi Gaussians per 1000 pixels (default 24, about 1 bpp on Kodak)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)

    import gscodec
    from gscodec.benchmark.distortion import load_rgb, psnr
    from gscodec.benchmark.provenance import default_dataset
    from gscodec.encoder.api import default_gaussians

    kodak = default_dataset()
    out = []
    for spec in a.images.split(","):
        path = Path(spec)
        if not path.exists() and kodak is not None:
            path = kodak / f"{spec}.png"
        if not path.exists():
            raise SystemExit(f"error_by_activity: no image {spec!r} (a PNG path or a Kodak name)")
        img = load_rgb(str(path))
        h, w = img.shape[:2]
        data = gscodec.encode(img, gaussians=default_gaussians(h, w, a.density))
        dec = gscodec.decode(data)[:, :, :3]
        bpp = len(data) * 8 / (h * w)
        j2k, jbpp = jpeg2000_at(img, bpp)
        act = activity(img)
        res = {"image": path.stem, "density": a.density, "gsi_bpp": bpp, "gsi_psnr": psnr(img, dec),
               "jpeg2000_bpp": jbpp, "jpeg2000_psnr": psnr(img, j2k),
               "classes": classes(act, img.astype(np.float64), {"gsi": dec, "jpeg2000": j2k}),
               "gaussians": gaussians_by_activity(act, data)}
        out.append(res)
        print(f"{res['image']}: gsi {bpp:.3f} bpp {res['gsi_psnr']:.2f} dB, JPEG 2000 "
              f"{jbpp:.3f} bpp {res['jpeg2000_psnr']:.2f} dB")
        print(f"  {'activity':>9s} {'pixels':>7s} {'gsi MSE':>8s} {'J2K MSE':>8s} {'gsi err':>8s}"
              f" {'J2K err':>8s} {'Gauss':>7s} {'/1000px':>8s} {'sig maj':>8s} {'sig min':>8s}")
        for c, g in zip(res["classes"], res["gaussians"], strict=True):
            print(f"  {_cls(c):>9s} {c['pixels']:7.3f} {_num(c['gsi_mse'])} "
                  f"{_num(c['jpeg2000_mse'])} {_num(c['gsi_share'], '8.3f')} "
                  f"{_num(c['jpeg2000_share'], '8.3f')} {g['gaussians']:7.3f} "
                  f"{g['per_1000_px']:8.1f} {_num(g['sigma_major'])} {_num(g['sigma_minor'])}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
