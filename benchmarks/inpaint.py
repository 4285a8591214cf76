"""Inpainting benchmark: gsi against scikit-image's biharmonic and OpenCV's Telea / NS.

Masks: LaMa's thin / medium / thick random presets, generated in code (inpaint_masks.py,
fixed seeds). Metrics: PSNR over the hole, PSNR over the image, MS-SSIM (pytorch-msssim,
if installed), seconds per image (wall clock of the call alone, the methods interleaved
image by image in one process; one untimed gsi call first loads the compiled renderer).
Writes benchmarks/results/inpaint/inpaint.json and inpaint.png (examples side by side).

    python benchmarks/inpaint.py --images 24 [--scale 0.5] [--kinds thin,medium,thick]

gsi is `gscodec.inpaint` with its defaults: the local Gaussian fit around the hole
(harmonic prior, multi-level Gaussian lattices, least-squares colours, rendered by the
decoder); --gaussians / --iterations pass through to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from inpaint_masks import lama_mask  # noqa: E402

import gscodec  # noqa: E402
from gscodec.inpainting import INPAINT_ITERATIONS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def psnr(a, b, sel=None):
    d = a.astype(np.float64) - b.astype(np.float64)
    if sel is not None:
        d = d[sel]
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def msssim(a, b):
    try:
        import torch
        from pytorch_msssim import ms_ssim
    except ImportError:
        return None
    t = lambda x: torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    win = 11 if min(a.shape[:2]) > 160 else 7  # ms_ssim needs side > (win-1)*16
    try:
        return float(ms_ssim(t(a), t(b), data_range=255, win_size=win))
    except AssertionError:
        return None


def methods(args):
    out = {}

    def gsi(img, mask):
        return gscodec.inpaint(img, mask, gaussians=args.gaussians, iterations=args.iterations,
                               seed=0)
    out["gsi"] = gsi
    notes = []
    try:
        from skimage.restoration import inpaint_biharmonic

        def biharmonic(img, mask):
            r = inpaint_biharmonic(img, mask, channel_axis=-1)
            return np.clip(np.rint(r * 255), 0, 255).astype(np.uint8)
        out["biharmonic"] = biharmonic
    except ImportError:
        notes.append("scikit-image not installed: biharmonic skipped")
    try:
        import cv2

        def telea(img, mask):
            return cv2.inpaint(img, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)

        def ns(img, mask):
            return cv2.inpaint(img, mask.astype(np.uint8), 3, cv2.INPAINT_NS)
        out["telea"] = telea
        out["navier-stokes"] = ns
    except ImportError:
        notes.append("opencv not installed: Telea and Navier-Stokes skipped")
    return out, notes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "kodak"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--kinds", default="thin,medium,thick")
    ap.add_argument("--scale", type=float, default=1.0, help="resize images first (Lanczos)")
    ap.add_argument("--gaussians", type=int, default=None,
                    help="gsi Gaussians (default: the local fit's own lattice spacing)")
    ap.add_argument("--iterations", type=int, default=None,
                    help=f"gsi iterations (default: none, the local fit; >0: the whole-image "
                         f"masked encode, whose default is {INPAINT_ITERATIONS})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for gsi (default 1: the other methods use one core)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inpaint"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    files = sorted(Path(args.dataset).glob("*.png"))[: args.images]
    if not files:
        sys.exit(f"no PNG images in {args.dataset}")
    kinds = args.kinds.split(",")
    fns, notes = methods(args)
    for n in notes:
        print("note:", n)
    rows, examples = [], {}
    # Untimed warm-up: loads (and on a first run compiles) the CPU renderer extension.
    warm = np.zeros((32, 32, 3), np.uint8)
    warm_mask = np.zeros((32, 32), bool)
    warm_mask[10:20, 10:20] = True
    fns["gsi"](warm, warm_mask)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        if args.scale != 1.0:
            im = im.resize((round(im.width * args.scale), round(im.height * args.scale)), Image.LANCZOS)
        img = np.asarray(im)
        h, w = img.shape[:2]
        for kind in kinds:
            mask = lama_mask(kind, h, w, seed=hash_seed(f.stem, kind))
            hole_in = np.where(mask[..., None], 255, img).astype(np.uint8)
            ex = {"input": hole_in, "original": img}
            for name, fn in fns.items():
                t0 = time.perf_counter()
                res = fn(img.copy(), mask.copy())
                sec = time.perf_counter() - t0
                row = {"image": f.name, "kind": kind, "method": name, "hole_frac": float(mask.mean()),
                       "psnr_hole": psnr(res, img, mask), "psnr_image": psnr(res, img),
                       "ms_ssim": msssim(res, img), "seconds": sec}
                rows.append(row)
                ex[name] = res
                print(f"{f.name} {kind:6s} {name:14s} hole {row['psnr_hole']:6.2f} dB  image "
                      f"{row['psnr_image']:6.2f} dB  ms-ssim {row['ms_ssim'] or float('nan'):.4f}  "
                      f"{sec:6.2f} s", flush=True)
            if i == 0:
                examples[kind] = ex
    summary = {}
    print(f"\n{'kind':7s} {'method':14s} {'hole PSNR':>9s} {'img PSNR':>9s} {'MS-SSIM':>8s} {'s/img':>7s}")
    for kind in kinds:
        for name in fns:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == name]
            ms = [r["ms_ssim"] for r in sel if r["ms_ssim"] is not None]
            s = {"images": len(sel), "psnr_hole": float(np.mean([r["psnr_hole"] for r in sel])),
                 "psnr_image": float(np.mean([r["psnr_image"] for r in sel])),
                 "ms_ssim": float(np.mean(ms)) if ms else None,
                 "seconds": float(np.mean([r["seconds"] for r in sel]))}
            summary.setdefault(kind, {})[name] = s
            print(f"{kind:7s} {name:14s} {s['psnr_hole']:9.2f} {s['psnr_image']:9.2f} "
                  f"{(s['ms_ssim'] or float('nan')):8.4f} {s['seconds']:7.2f}")
    versus = {}
    if "biharmonic" in fns:
        print(f"\n{'kind':7s} gsi - biharmonic: hole PSNR (dB), images won, time ratio")
        for kind in kinds:
            g = {r["image"]: r for r in rows if r["kind"] == kind and r["method"] == "gsi"}
            b = {r["image"]: r for r in rows if r["kind"] == kind and r["method"] == "biharmonic"}
            d = [g[k]["psnr_hole"] - b[k]["psnr_hole"] for k in g]
            v = {"hole_psnr_gain_db": float(np.mean(d)),
                 "images_won": int(sum(x > 0 for x in d)), "images": len(d),
                 "time_ratio": summary[kind]["gsi"]["seconds"] / summary[kind]["biharmonic"]["seconds"]}
            versus[kind] = v
            print(f"{kind:7s} {v['hole_psnr_gain_db']:+.2f} dB, {v['images_won']}/{v['images']}, "
                  f"{v['time_ratio']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join([Path(sys.executable).name] + sys.argv),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
           "settings": {"scale": args.scale, "images": len(files), "kinds": kinds,
                        "gsi_gaussians": args.gaussians or "local lattice (default spacing)",
                        "gsi_iterations": args.iterations, "torch_threads": args.threads,
                        "gsi_path": "local lattice fit" if not args.iterations
                        else "whole-image masked encode"},
           "notes": notes, "summary": summary, "gsi_vs_biharmonic": versus, "rows": rows}
    (out / "inpaint.json").write_text(json.dumps(doc, indent=1))
    figure(examples, list(fns), out / "inpaint.png")
    print(f"wrote {out / 'inpaint.json'} and {out / 'inpaint.png'}")


def hash_seed(stem: str, kind: str) -> int:
    import zlib
    return zlib.crc32(f"{stem}/{kind}".encode())


def figure(examples, names, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib not installed: no figure")
        return
    cols = ["input"] + names + ["original"]
    kinds = list(examples)
    fig, axes = plt.subplots(len(kinds), len(cols), figsize=(2.6 * len(cols), 1.9 * len(kinds)),
                             squeeze=False)
    for r, kind in enumerate(kinds):
        for c, col in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(examples[kind][col])
            ax.set_xticks([]); ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.set_ylabel(kind, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
