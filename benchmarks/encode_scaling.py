#!/usr/bin/env python
"""Encode time and peak memory against image size at a fixed density (issue 30's large
images).

    python benchmarks/encode_scaling.py [--image tests/data/kodim23.png]
        [--megapixels 0.4,1,2.8] [--effort default] [--threads 2]

The image is resized (Lanczos) to each size, keeping its aspect ratio, and encoded at the
default density in its own process (`gscodec.encode`); the file is decoded for its PSNR
against the resized image. The time is the encode's, after the imports (torch's
import, about 1.5 s, is reported apart). Peak memory is the child's maximum resident set
(ru_maxrss), and the part the encode adds to what the process held after its imports and
the image load.
Prints a table with the time per megapixel; writes JSON
(benchmarks/results/encode_scaling.json). Timing targets live here, not in the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, math, os, resource, sys, time
import numpy as np
from PIL import Image
t_import = time.perf_counter()
import gscodec
import gscodec.encoder  # torch and the encoder loaded outside the timed encode
t_import = time.perf_counter() - t_import
image, mp, effort = sys.argv[1], float(sys.argv[2]), sys.argv[3]
im = Image.open(image).convert("RGB")
s = math.sqrt(mp * 1e6 / (im.width * im.height))
im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
arr = np.asarray(im)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c0, t0 = time.process_time(), time.perf_counter()
data = gscodec.encode(arr, effort=effort)
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dec = gscodec.decode(data).reshape(arr.shape).astype(np.float64)
mse = float(((dec - arr) ** 2).mean())
print(json.dumps({"width": arr.shape[1], "height": arr.shape[0], "bytes": len(data),
                  "bpp": 8 * len(data) / (arr.shape[0] * arr.shape[1]),
                  "psnr": 10 * math.log10(255 ** 2 / max(mse, 1e-12)), "wall_s": wall,
                  "cpu_s": cpu, "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024,
                  "import_s": t_import, "load": os.getloadavg()[0]}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="tests/data/kodim23.png")
    ap.add_argument("--megapixels", default="0.4,1,2.8")
    ap.add_argument("--effort", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "encode_scaling.json")
    a = ap.parse_args(argv)
    image = str((ROOT / a.image).resolve())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(a.threads))
    rows = []
    print("| megapixels | size | s (CPU s) | s per MP | peak MB (encode adds) | bpp | PSNR |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mp in (float(v) for v in a.megapixels.split(",")):
        out = subprocess.run([sys.executable, "-c", CHILD, image, str(mp), a.effort], env=env,
                             cwd=Path("/"), capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["megapixels"] = r["width"] * r["height"] / 1e6
        rows.append(r)
        print(f"| {r['megapixels']:.2f} | {r['width']}x{r['height']} | {r['wall_s']:.1f} "
              f"({r['cpu_s']:.1f}) | {r['wall_s'] / r['megapixels']:.1f} | "
              f"{r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r['rss_before_mb']:.0f}) | "
              f"{r['bpp']:.3f} | {r['psnr']:.2f} |", flush=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/encode_scaling.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "commit": commit, "image": Path(image).name, "effort": a.effort,
        "threads": a.threads, "cpu_count": os.cpu_count(), "encodes": rows}, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
