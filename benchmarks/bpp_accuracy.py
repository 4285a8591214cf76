"""Rate-control accuracy: encode every image at target bpps and report how far the written
file lands from the target (bpp = file bytes * 8 / pixels).

    python benchmarks/bpp_accuracy.py [DATASET_DIR] [--targets 0.25,0.5,1.0] [--images N]
        [--effort fast|default|max] [--iterations K] [--json OUT]

Prints one row per image and target and a summary (worst and mean absolute error, share
within 5 %); writes everything to JSON (default benchmarks/results/bpp_accuracy.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gscodec  # noqa: E402
from gscodec.imageio import load_image  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(REPO.parent / "shared/datasets/kodak"))
    ap.add_argument("--targets", default="0.25,0.5,1.0", help="target bpps, comma-separated")
    ap.add_argument("--images", type=int, default=None, help="only the first N images")
    ap.add_argument("--effort", default="fast", choices=["fast", "default", "max"])
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/bpp_accuracy.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="only merge the rows of earlier runs (e.g. shards) into --json")
    ap.add_argument("--shard", default="0/1", metavar="K/M",
                    help="run only images K, K+M, K+2M, ... with K from 0 to M-1 (parallel "
                         "shards; merge after)")
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
        return report(rows, args, sorted({r["target_bpp"] for r in rows}))
    k, m = (int(v) for v in args.shard.split("/"))
    if not 0 <= k < m:       # (shards count from 0: 1/2 and 2/2 would skip the first image)
        print(f"bpp_accuracy: --shard {args.shard}: K must be 0 to M-1", file=sys.stderr)
        return 2
    files = sorted(Path(args.dataset).glob("*.png"))[: args.images][k::m]
    if not files:
        print(f"bpp_accuracy: no PNG images in {args.dataset}", file=sys.stderr)
        return 1
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    print(f"{'image':>12} {'target':>7} {'bpp':>8} {'error %':>8} {'N':>6} {'PSNR':>6} {'s':>5}")
    for path in files:
        img = load_image(str(path))
        h, w = img.shape[:2]
        for t in targets:
            t0 = time.perf_counter()
            data = gscodec.encode(img, bpp=t, effort=args.effort, iterations=args.iterations)
            secs = time.perf_counter() - t0
            bpp = len(data) * 8 / (w * h)
            row = {"image": path.name, "target_bpp": t, "bpp": bpp, "bytes": len(data),
                   "error_pct": 100 * (bpp / t - 1), "gaussians": gscodec.info(data)["count"],
                   "psnr": psnr(img, gscodec.decode(data)), "seconds": secs}
            rows.append(row)
            print(f"{path.name:>12} {t:>7.3f} {bpp:>8.4f} {row['error_pct']:>+8.2f} "
                  f"{row['gaussians']:>6} {row['psnr']:>6.2f} {secs:>5.0f}", flush=True)
    return report(rows, args, targets)


def report(rows, args, targets) -> int:
    err = np.abs([r["error_pct"] for r in rows])
    summary = {"files": len(rows), "max_abs_error_pct": float(err.max()),
               "mean_abs_error_pct": float(err.mean()),
               "within_5pct": int((err <= 5).sum())}
    for t in targets:
        e = np.abs([r["error_pct"] for r in rows if r["target_bpp"] == t])
        summary[f"max_abs_error_pct@{t}"] = float(e.max())
    print(f"\n{len(rows)} files: max |error| {summary['max_abs_error_pct']:.2f} %, mean "
          f"{summary['mean_abs_error_pct']:.2f} %, {summary['within_5pct']}/{len(rows)} within 5 %")
    rows = sorted(rows, key=lambda r: (r["image"], r["target_bpp"]))
    out = {"command": " ".join(sys.argv), "effort": args.effort, "iterations": args.iterations,
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "python": platform.python_version()},
           "summary": summary, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
