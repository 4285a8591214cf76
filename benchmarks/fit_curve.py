"""PSNR against iteration of the free fit (unquantized): the encoder against its random
start and against the first release's fit.

    python benchmarks/fit_curve.py [DATASET_DIR] [--images 8] [--gaussians 2000,5000,10000]
        [--arms structure@2000,random@2000,old@2000,old@10000] [--every 100] [--threads T]
        [--shard K/M] [--json OUT]
    python benchmarks/fit_curve.py --merge OUT PART.json [PART.json ...]

Arms (NAME@ITERATIONS):
  structure  the encoder's free fit: structure-guided start (`--init structure`, default);
  random     the same fit from the random start (`--init random`);
  old        the first release's fit (`FitConfig.first_release()`): random start, base
             Adam steps with beta2 0.999, no refinement, no colour re-solves.
For each image, Gaussian count and arm it records the training PSNR every --every
iterations and, at the end, the PSNR of the 8-bit render of the fitted (unquantized)
Gaussians. Prints a table of final PSNRs (mean over images) and writes all curves to JSON.
--shard K/M runs images K, K+M, ... (one process per core on a small machine); --merge
joins the parts' runs and prints the table.
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

from gscodec.encoder.config import FitConfig  # noqa: E402
from gscodec.encoder.objective import Objective  # noqa: E402
from gscodec.encoder.pipeline import Pipeline  # noqa: E402
from gscodec.encoder.progress import psnr_from_mse  # noqa: E402
from gscodec.encoder.stages import EncodeState, FreeFit  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402
from gscodec.render import to_uint8  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def arm_config(arm: str, iterations: int, every: int, seed: int = 0) -> FitConfig:
    if arm == "old":
        return FitConfig.first_release(iterations=iterations, seed=seed, record_every=every)
    if arm in ("structure", "random"):
        return FitConfig(iterations=iterations, init=arm, seed=seed, record_every=every)
    raise ValueError(f"unknown arm {arm!r} (structure, random or old)")


def fit_curve(img: np.ndarray, n: int, iterations: int, arm: str, every: int, seed: int = 0):
    cfg = arm_config(arm, iterations, every, seed)
    f = Objective(img, cfg)
    state = EncodeState.new(f, cfg.seed)
    t0 = time.perf_counter()
    state.params = f.start(n, state.gen)           # n Gaussians (no overcomplete start)
    Pipeline((FreeFit(cfg, n),)).run(f, state)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = psnr(img, to_uint8(f.render(state.params)).numpy())
    curve = [(step, psnr_from_mse(mse)) for _, step, mse in state.history]
    return {"init": arm, "gaussians": n, "iterations": iterations, "final_psnr": final,
            "seconds": seconds, "curve": curve}


def summarize(rows: list[dict]) -> dict:
    """Mean final PSNR per (N, arm@iterations), with the number of images behind it."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["gaussians"], r["init"], r["iterations"]), []).append(
            r["final_psnr"])
    return {f"{n}/{arm}@{its}": {"psnr": float(np.mean(v)), "images": len(v)}
            for (n, arm, its), v in sorted(groups.items())}


def print_table(summary: dict) -> None:
    counts = sorted({int(k.split("/")[0]) for k in summary})
    order = {"structure": 0, "random": 1, "old": 2}
    arms = sorted({k.split("/")[1] for k in summary},
                  key=lambda a: (order.get(a.split("@")[0], 3), int(a.split("@")[1])))
    print("mean final PSNR (unquantized, dB; images in brackets)")
    print("N".rjust(7) + "".join(a.rjust(20) for a in arms))
    for n in counts:
        line = str(n).rjust(7)
        for a in arms:
            v = summary.get(f"{n}/{a}")
            line += (f"{v['psnr']:.2f} ({v['images']})" if v else "-").rjust(20)
        print(line)


def write(path: str, command: str, rows: list[dict]) -> dict:
    summary = summarize(rows)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "machine": platform.processor()
                               or platform.machine(), "threads": torch.get_num_threads(),
                               "summary": summary, "runs": rows}, indent=1))
    print(f"wrote {out}")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(REPO.parent / "shared/datasets/kodak"),
                    help="folder of PNG images (default: ../shared/datasets/kodak)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--gaussians", default="2000,5000,10000")
    ap.add_argument("--arms", default="structure@2000,random@2000,old@2000,old@10000",
                    help="comma-separated ARM@ITERATIONS, ARM in structure, random, old")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch/renderer threads (0: torch's default); on a busy machine 1 "
                         "can be many times faster than oversubscribed threads")
    ap.add_argument("--shard", default="0/1", help="K/M: run images K, K+M, ... only")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="merge these result files into --json and print the table")
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/fit_curve.json"))
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["runs"]]
        print_table(write(args.json, " ".join(sys.argv), rows))
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        k, m = (int(x) for x in args.shard.split("/"))
        if not 0 <= k < m:   # (shards count from 0)
            raise ValueError(f"--shard {args.shard}: K must be 0 to M-1")
        runs = [(a.split("@")[0], int(a.split("@")[1])) for a in args.arms.split(",")]
        for arm, _ in runs:
            arm_config(arm, 1, 0)
        counts = [int(x) for x in args.gaussians.split(",")]
    except ValueError as e:
        print(f"fit_curve: bad option: {e}", file=sys.stderr)
        return 2
    files = sorted(Path(args.dataset).glob("*.png"))[: args.images][k::m]
    if not files:
        print(f"fit_curve: no PNG images in {args.dataset}", file=sys.stderr)
        return 1
    rows = []
    for path in files:
        img = np.asarray(Image.open(path).convert("RGB"))
        for n in counts:
            for arm, its in runs:
                r = fit_curve(img, n, its, arm, args.every)
                r["image"] = path.name
                rows.append(r)
                print(f"{path.name} N={n} {arm}@{its}: {r['final_psnr']:.2f} dB "
                      f"({r['seconds']:.0f} s)", flush=True)
    print_table(write(args.json, " ".join(sys.argv), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
