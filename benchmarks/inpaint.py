"""Inpainting benchmark: gsi against scikit-image's biharmonic, OpenCV's Telea and
Navier-Stokes, and PatchMatch (an exemplar-based peer, the `pypatchmatch` package).

Masks (inpaint_masks.py, fixed seeds): LaMa's thin / medium / thick random presets, wide
scribbles, object-shaped blobs and a large box. Metrics:
- PSNR over the hole (the headline), PSNR over the image, MS-SSIM (pytorch-msssim) of the
  image;
- SSIMULACRA2 (the `ssimulacra2` package) of the image (higher is better, 100 = identical,
  its pooling weights the worst regions: the hole dominates); on a crop of the hole alone
  the scores fell to -100 to -200, far outside the range the metric was fitted on;
- FLIP (the `flip-evaluator` package, LDR, 67 pixels per degree): the error map of the
  crop bounding the hole plus 16 pixels, averaged over the hole's pixels (lower is better,
  0 = identical);
- seconds per image: wall clock of the call alone, the methods interleaved image by image in
  one process (one untimed gsi call first loads the compiled renderer).
A peer or metric whose package is missing is skipped with a note (".[bench]" installs all).
Writes inpaint.json and inpaint.png (examples side by side) to --out.

    python benchmarks/inpaint.py --images 24 [--scale 0.5] [--kinds thin,medium,...]
    python benchmarks/inpaint.py --dataset ../shared/datasets/photos --images 16 --out DIR
    python benchmarks/inpaint.py ... --rows DIR/inpaint.partial.json   # summarise a stopped run

gsi is `gscodec.inpaint` with its defaults: the local Gaussian fit around the hole
(edge-directed prior, multi-level Gaussian lattices, least-squares colours, rendered by the
decoder); gsi-texture adds exemplar detail (`texture=True`). --gaussians / --iterations
pass through to both.
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
from inpaint_masks import KINDS, lama_mask  # noqa: E402

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
    def t(x):
        return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    win = 11 if min(a.shape[:2]) > 160 else 7  # ms_ssim needs side > (win-1)*16
    try:
        return float(ms_ssim(t(a), t(b), data_range=255, win_size=win))
    except AssertionError:
        return None


CROP_MARGIN = 16     # pixels around the hole's bounding box for SSIMULACRA2 and FLIP


def hole_crop(mask):
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    m = CROP_MARGIN
    return (slice(max(0, ys.min() - m), min(h, ys.max() + 1 + m)),
            slice(max(0, xs.min() - m), min(w, xs.max() + 1 + m)))


def ssimulacra2(a, b):
    """SSIMULACRA2 of uint8 RGB arrays (the package reads files: PNGs in memory)."""
    try:
        from ssimulacra2 import compute_ssimulacra2
    except ImportError:
        return None
    import io

    def png(x):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        buf.seek(0)
        return buf
    if min(a.shape[:2]) < 8:
        return None
    return float(compute_ssimulacra2(png(a), png(b)))


def flip_hole(a, b, mask):
    """Mean FLIP error over the mask's pixels (a: reference, b: test, uint8 RGB)."""
    try:
        import flip_evaluator
    except ImportError:
        return None
    err, _, _ = flip_evaluator.evaluate(a.astype(np.float32) / 255.0,
                                        b.astype(np.float32) / 255.0, "LDR",
                                        applyMagma=False, computeMeanError=False)
    err = np.asarray(err)
    err = err[..., 0] if err.ndim == 3 else err
    return float(err[mask].mean())


def methods(args):
    out = {}

    def gsi(img, mask):
        return gscodec.inpaint(img, mask, gaussians=args.gaussians, iterations=args.iterations,
                               seed=0)
    out["gsi"] = gsi

    def gsi_texture(img, mask):
        return gscodec.inpaint(img, mask, gaussians=args.gaussians, iterations=args.iterations,
                               seed=0, texture=True)
    out["gsi-texture"] = gsi_texture
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
    try:
        import patchmatch

        def pm(img, mask):
            # patch_size is the patch radius: 3 (7x7 patches), as the package's examples;
            # its default of 15 took 8x as long and filled worse on Kodak.
            patchmatch.set_random_seed(0)
            return patchmatch.inpaint(img, mask, patch_size=3)
        out["patchmatch"] = pm
    except (ImportError, OSError):
        notes.append("pypatchmatch not installed: PatchMatch skipped")
    return out, notes


def run(files, kinds, fns, args):
    """Every method on every image and mask kind; rows of metrics and the figure's examples."""
    rows, examples = [], {}
    # Untimed warm-up: loads (and on a first run compiles) the CPU renderer extension.
    warm = np.zeros((32, 32, 3), np.uint8)
    warm_mask = np.zeros((32, 32), bool)
    warm_mask[10:20, 10:20] = True
    gscodec.inpaint(warm, warm_mask)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        if args.scale != 1.0:
            im = im.resize((round(im.width * args.scale), round(im.height * args.scale)),
                           Image.LANCZOS)
        img = np.asarray(im)
        h, w = img.shape[:2]
        for kind in kinds:
            mask = lama_mask(kind, h, w, seed=hash_seed(f.stem, kind))
            hole_in = np.where(mask[..., None], 255, img).astype(np.uint8)
            ex = {"input": hole_in, "original": img, "crop": figure_crop(mask)}
            for name, fn in fns.items():
                if name == "gsi-texture" and kind not in args.texture_kinds.split(","):
                    continue
                t0 = time.perf_counter()
                res = fn(img.copy(), mask.copy())
                sec = time.perf_counter() - t0
                res = res.reshape(img.shape)
                cy, cx = hole_crop(mask)
                row = {"image": f.name, "kind": kind, "method": name,
                       "hole_frac": float(mask.mean()),
                       "psnr_hole": psnr(res, img, mask), "psnr_image": psnr(res, img),
                       "ms_ssim": msssim(res, img),
                       "ssimulacra2": ssimulacra2(img, res),
                       "flip_hole": flip_hole(img[cy, cx], res[cy, cx], mask[cy, cx]),
                       "seconds": sec}
                rows.append(row)
                ex[name] = res
                print(f"{f.name} {kind:8s} {name:12s} hole {row['psnr_hole']:6.2f} dB  image "
                      f"{row['psnr_image']:6.2f} dB  ms-ssim {_f(row['ms_ssim'], 4)}  "
                      f"ssimulacra2 {_f(row['ssimulacra2'], 2)}  flip {_f(row['flip_hole'], 4)}"
                      f"  {sec:6.2f} s", flush=True)
            if f.name == args.example or (i == 0 and not args.example):
                examples[kind] = ex
        # rows so far, so that a long run that is stopped still leaves its numbers
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "inpaint.partial.json").write_text(json.dumps(rows))
    return rows, examples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "kodak"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--stride", type=int, default=1,
                    help="take every STRIDE-th image of the sorted folder (then --images of them)")
    ap.add_argument("--texture-kinds", default="thick,blob,box",
                    help="mask kinds on which gsi-texture runs (it is meant for large holes)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--methods", default=None, help="comma list (default: all installed)")
    ap.add_argument("--scale", type=float, default=1.0, help="resize images first (Lanczos)")
    ap.add_argument("--gaussians", type=int, default=None,
                    help="gsi Gaussians (default: the local fit's own lattice spacing)")
    ap.add_argument("--iterations", type=int, default=None,
                    help=f"gsi iterations (default: none, the local fit; >0: the whole-image "
                         f"masked encode, whose default is {INPAINT_ITERATIONS})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for gsi (default 1: the other methods use one core)")
    ap.add_argument("--rows", default=None,
                    help="summarise the rows of a stopped run (its inpaint.partial.json) "
                         "instead of running")
    ap.add_argument("--example", default=None,
                    help="image shown in the figure (default: the first)")
    ap.add_argument("--figure-dpi", type=int, default=110, help="the figure's resolution")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inpaint"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    files = sorted(Path(args.dataset).glob("*.png"))[:: args.stride][: args.images]
    if not files:
        sys.exit(f"no PNG images in {args.dataset}")
    kinds = args.kinds.split(",")
    fns, notes = methods(args)
    if args.methods:
        fns = {k: v for k, v in fns.items() if k in args.methods.split(",")}
    for n in notes:
        print("note:", n)
    if args.rows:
        # Summarise the rows of an earlier (stopped) run: its inpaint.partial.json.
        rows, examples = json.loads(Path(args.rows).read_text()), {}
        done = {r["image"] for r in rows}
        files = [f for f in files if f.name in done]
        notes.append(f"summarised from {args.rows}: the {len(files)} images that run finished")
    else:
        rows, examples = run(files, kinds, fns, args)
    summary, versus = summarize(rows, kinds, list(fns))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join([Path(sys.executable).name] + sys.argv),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
           "settings": {"scale": args.scale, "images": len(files), "stride": args.stride,
                        "files": [f.name for f in files], "kinds": kinds,
                        "texture_kinds": args.texture_kinds.split(","),
                        "gsi_gaussians": args.gaussians or "local lattice (default spacing)",
                        "gsi_iterations": args.iterations, "torch_threads": args.threads,
                        "gsi_path": "local lattice fit" if not args.iterations
                        else "whole-image masked encode"},
           "notes": notes, "summary": summary, "gsi_vs_peers": versus, "rows": rows}
    (out / "inpaint.json").write_text(json.dumps(doc, indent=1))
    (out / "inpaint.partial.json").unlink(missing_ok=True)
    if examples:
        figure(examples, list(fns), out / "inpaint.png", args.figure_dpi)
    print(f"wrote {out / 'inpaint.json'}" + (f" and {out / 'inpaint.png'}" if examples else ""))


METRICS = (("psnr_hole", "hole PSNR", 2, True), ("psnr_image", "img PSNR", 2, True),
           ("ms_ssim", "MS-SSIM", 4, True), ("ssimulacra2", "SSIMU2", 2, True),
           ("flip_hole", "FLIP", 4, False), ("seconds", "s/img", 2, False))


def _f(v, d):
    return "  n/a " if v is None else f"{v:.{d}f}"


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(rows, kinds, names):
    """Per kind and method: the mean of each metric; per kind: each gsi variant against the
    best peer by mean hole PSNR (gain, images won) and against biharmonic's time."""
    summary = {}
    print(f"\n{'kind':8s} {'method':12s} " + " ".join(f"{m[1]:>9s}" for m in METRICS))
    for kind in kinds:
        for name in names:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == name]
            if not sel:
                continue
            s = {"images": len(sel)}
            s.update({m[0]: _mean([r[m[0]] for r in sel]) for m in METRICS})
            summary.setdefault(kind, {})[name] = s
            print(f"{kind:8s} {name:12s} " + " ".join(f"{_f(s[m[0]], m[2]):>9s}" for m in METRICS))
    versus = {}
    peers = [n for n in names if not n.startswith("gsi")]
    print(f"\n{'kind':8s} {'gsi':12s} best peer: hole PSNR gain (dB), images won, "
          "SSIMULACRA2 / FLIP better than every peer, time / biharmonic")
    for kind in kinds:
        if not peers:
            break
        sk = summary[kind]
        best = max(peers, key=lambda n: sk[n]["psnr_hole"])
        for g in [n for n in names if n.startswith("gsi") and n in sk]:
            gr = {r["image"]: r for r in rows if r["kind"] == kind and r["method"] == g}
            br = {r["image"]: r for r in rows if r["kind"] == kind and r["method"] == best}
            d = [gr[k]["psnr_hole"] - br[k]["psnr_hole"] for k in gr]
            s2 = [sk[n]["ssimulacra2"] for n in peers if sk[n]["ssimulacra2"] is not None]
            fl = [sk[n]["flip_hole"] for n in peers if sk[n]["flip_hole"] is not None]
            v = {"best_peer": best, "hole_psnr_gain_db": float(np.mean(d)),
                 "images_won": int(sum(x > 0 for x in d)), "images": len(d),
                 "ssimulacra2_best": bool(s2) and sk[g]["ssimulacra2"] > max(s2),
                 "flip_best": bool(fl) and sk[g]["flip_hole"] < min(fl),
                 "time_ratio_biharmonic": (sk[g]["seconds"] / sk["biharmonic"]["seconds"]
                                           if "biharmonic" in sk else None)}
            versus.setdefault(kind, {})[g] = v
            print(f"{kind:8s} {g:12s} {best:13s} {v['hole_psnr_gain_db']:+.2f} dB, "
                  f"{v['images_won']}/{v['images']}, {v['ssimulacra2_best']} / {v['flip_best']}, "
                  f"{_f(v['time_ratio_biharmonic'], 2)}")
    return summary, versus


def hash_seed(stem: str, kind: str) -> int:
    import zlib
    return zlib.crc32(f"{stem}/{kind}".encode())


def figure_crop(mask, margin=24, aspect=1.5):
    """The hole's bounding box plus margin, widened to the panel's aspect (width / height)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
    if (x1 - x0) < aspect * (y1 - y0):
        grow = int(aspect * (y1 - y0)) - (x1 - x0)
        x0, x1 = max(0, x0 - grow // 2), min(w, x1 + grow - grow // 2)
    else:
        grow = int((x1 - x0) / aspect) - (y1 - y0)
        y0, y1 = max(0, y0 - grow // 2), min(h, y1 + grow - grow // 2)
    return slice(y0, y1), slice(x0, x1)


def figure(examples, names, path, dpi=110):
    """One row per mask kind, one column per method, each panel cropped to the hole's
    bounding box plus a margin (so that a large image's hole is seen at its pixels)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib not installed: no figure")
        return
    cols = ["input"] + [n for n in names if any(n in ex for ex in examples.values())]
    cols += ["original"]
    kinds = list(examples)
    fig, axes = plt.subplots(len(kinds), len(cols), figsize=(2.6 * len(cols), 1.9 * len(kinds)),
                             squeeze=False)
    for r, kind in enumerate(kinds):
        for c, col in enumerate(cols):
            ax = axes[r][c]
            if col in examples[kind]:
                ax.imshow(examples[kind][col][examples[kind]["crop"]])
            else:                                     # e.g. gsi-texture on a thin mask
                ax.axis("off")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.set_ylabel(kind, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


if __name__ == "__main__":
    main()
