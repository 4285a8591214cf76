"""PSNR against iteration of the free fit (unquantized), random start vs structure start.

    python benchmarks/fit_curve.py [DATASET_DIR] [--images 8] [--gaussians 2000,5000,10000]
        [--iterations 2000] [--random-iterations 2000,10000] [--every 100] [--threads T]
        [--json OUT]

For each image and Gaussian count it runs the encoder's free fit (no quantization) from
the structure-guided start ("structure", the default encoder) for --iterations, and from
the random start ("random", the old behaviour) for each of --random-iterations, recording
the training PSNR every --every iterations, and at the end the PSNR of the 8-bit render of
the fitted (unquantized) Gaussians. Prints a table of final PSNRs (mean over images) and
writes all curves to JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gscodec.fit import FitConfig, Fitter, _Progress, psnr_from_mse  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402
from gscodec.render import to_uint8  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fit_curve(img: np.ndarray, n: int, iterations: int, init: str, every: int, seed: int = 0):
    cfg = FitConfig(iterations=iterations, init=init, seed=seed, record_every=every)
    f = Fitter(img, cfg)
    t0 = time.perf_counter()
    p = f.start(n)
    p = f.optimize(p, iterations, _Progress(0, False), "fit", refine_at=cfg.refine_at)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = psnr(img, to_uint8(f.render(p)).numpy())
    curve = [(step, psnr_from_mse(mse)) for _, step, mse in f.history]
    return {"init": init, "gaussians": n, "iterations": iterations, "final_psnr": final,
            "seconds": seconds, "curve": curve}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(REPO.parent / "shared/datasets/kodak"),
                    help="folder of PNG images (default: ../shared/datasets/kodak)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--gaussians", default="2000,5000,10000")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--random-iterations", default="2000,10000")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch/renderer threads (0: torch's default); on a busy machine 1 "
                         "can be many times faster than oversubscribed threads")
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/fit_curve.json"))
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    files = sorted(Path(args.dataset).glob("*.png"))[: args.images]
    if not files:
        print(f"fit_curve: no PNG images in {args.dataset}", file=sys.stderr)
        return 1
    counts = [int(x) for x in args.gaussians.split(",")]
    runs = [("structure", args.iterations)] + [("random", int(k)) for k in
                                                args.random_iterations.split(",")]
    rows = []
    for path in files:
        img = np.asarray(Image.open(path).convert("RGB"))
        for n in counts:
            for init, its in runs:
                r = fit_curve(img, n, its, init, args.every)
                r["image"] = path.name
                rows.append(r)
                print(f"{path.name} N={n} {init}@{its}: {r['final_psnr']:.2f} dB "
                      f"({r['seconds']:.0f} s)", flush=True)
    print(f"\nmean final PSNR (unquantized) over {len(files)} images")
    header = "N".rjust(7) + "".join(f"{i}@{k}".rjust(18) for i, k in runs)
    print(header)
    summary = {}
    for n in counts:
        line = str(n).rjust(7)
        for init, its in runs:
            vals = [r["final_psnr"] for r in rows if r["gaussians"] == n and
                    r["init"] == init and r["iterations"] == its]
            summary[f"{n}/{init}@{its}"] = float(np.mean(vals))
            line += f"{np.mean(vals):18.2f}"
        print(line)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.processor()
                               or platform.machine(), "threads": torch.get_num_threads(),
                               "summary": summary, "runs": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
