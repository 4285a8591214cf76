#!/usr/bin/env python
"""Encode time of this checkout against a baseline checkout, interleaved (issue 30's measure).

    python benchmarks/encode_time.py --baseline /path/to/old/checkout \
        [--images tests/data/kodim23.png,...] [--efforts fast,default] [--threads 2] [--rounds 2]
        [--mask box|thin|...]

Each encode runs in its own process (`gscodec.encode` of the whole image at the default
size, timed after the imports: torch's, about 1.5 s, is reported apart as import_s; the file
decoded for its PSNR), the baseline's with PYTHONPATH set to its checkout
(its compiled kernel built in place), the two sides alternating encode by encode so that the
machine's load falls on both alike. Prints a table of the median wall and CPU time per side
and their ratio, with bytes and PSNR (with --mask: masked encodes, PSNR on the known pixels
and in the hole, and `gscodec.inpaint` of the same mask timed); writes every encode and the
summary as JSON
(benchmarks/results/encode_time.json). Timing targets live here, not in the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: one encode, its times and result as one JSON line.
CHILD = r"""
import hashlib, json, math, os, sys, time
import numpy as np
from PIL import Image
t_import = time.perf_counter()
import gscodec
try:
    import gscodec.encoder  # torch and the encoder loaded outside the timed encode
except ImportError:         # (a checkout from before the encoder package)
    pass
t_import = time.perf_counter() - t_import
image, effort, mask_file = sys.argv[1:4]
arr = np.asarray(Image.open(image).convert("RGB"))
mask = np.load(mask_file) if mask_file else None
c0, t0 = time.process_time(), time.perf_counter()
data = gscodec.encode(arr, effort=effort, mask=mask)
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
dec = gscodec.decode(data).reshape(arr.shape).astype(np.float64)
known = np.ones(arr.shape[:2], bool) if mask is None else ~mask
mse = float(((dec - arr)[known] ** 2).mean())
extra = {}
if mask is not None:
    hole = float(((dec - arr)[mask] ** 2).mean())
    c1, t1 = time.process_time(), time.perf_counter()
    gscodec.inpaint(arr, mask)
    extra = {"hole_psnr": 10 * math.log10(255 ** 2 / max(hole, 1e-12)),
             "inpaint_wall_s": time.perf_counter() - t1,
             "inpaint_cpu_s": time.process_time() - c1}
print(json.dumps({"bytes": len(data), "psnr": 10 * math.log10(255 ** 2 / max(mse, 1e-12)),
                  **extra,
                  "wall_s": wall, "cpu_s": cpu, "sha256": hashlib.sha256(data).hexdigest(),
                  "gscodec": os.path.dirname(gscodec.__file__), "import_s": t_import,
                  "load": os.getloadavg()[0]}))
"""


def encode(checkout: Path, image: str, effort: str, threads: int, mask_file: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(threads))
    # cwd outside both checkouts: sys.path[0] must not pick one up
    out = subprocess.run([sys.executable, "-c", CHILD, image, effort, mask_file], env=env,
                         cwd=Path("/").resolve(), capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(row["gscodec"]).resolve() != (checkout / "gscodec").resolve():
        raise SystemExit(f"encode_time: {checkout} imported gscodec from {row['gscodec']}")
    return row


def make_masks(images: list[str], kind: str) -> dict:
    """{image: .npy file of its mask}: inpaint_masks.lama_mask of `kind`, seed 0, made here
    (with this checkout's generator) so that both sides see the same mask."""
    import tempfile

    import numpy as np
    from PIL import Image
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from inpaint_masks import lama_mask
    folder = Path(tempfile.mkdtemp(prefix="encode_time_masks_"))
    out = {}
    for image in images:
        w, h = Image.open(image).size
        out[image] = str(folder / f"{Path(image).stem}.npy")
        np.save(out[image], lama_mask(kind, h, w, 0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True,
                    help="checkout of the encoder to compare against (kernel built in place)")
    ap.add_argument("--images", default="tests/data/kodim23.png,"
                    "../shared/datasets/kodak/kodim05.png")
    ap.add_argument("--efforts", default="fast,default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mask", default="",
                    help="masked encodes: every image under inpaint_masks.py's mask of this "
                    "kind (seed 0; e.g. box, thin), and gscodec.inpaint of it timed too")
    ap.add_argument("--json", type=Path, default=None,
                    help="default: benchmarks/results/encode_time[_mask-KIND].json")
    a = ap.parse_args(argv)
    if a.json is None:
        a.json = ROOT / "benchmarks" / "results" / (
            f"encode_time_mask-{a.mask}.json" if a.mask else "encode_time.json")
    sides = {"baseline": a.baseline.resolve(), "this": ROOT}
    images = [str((ROOT / p).resolve()) for p in a.images.split(",")]
    masks = make_masks(images, a.mask) if a.mask else {}
    rows = []
    for rnd in range(a.rounds):
        for image in images:
            for effort in a.efforts.split(","):
                for side, path in sides.items():
                    r = encode(path, image, effort, a.threads, masks.get(image, ""))
                    r.update(side=side, round=rnd, image=Path(image).name, effort=effort)
                    rows.append(r)
                    masked = (f" hole {r['hole_psnr']:.2f} dB, inpaint "
                              f"{r['inpaint_wall_s']:.2f} s" if a.mask else "")
                    print(f"round {rnd} {side:8s} {r['image']} {effort:7s} {r['bytes']} B "
                          f"{r['psnr']:.3f} dB {r['wall_s']:.2f} s wall {r['cpu_s']:.2f} s CPU"
                          f"{masked} (load {r['load']:.1f})", flush=True)
    summary = []
    print(f"\nmedians over {a.rounds} rounds, {a.threads} threads")
    print("| image | effort | baseline s (CPU) | this s (CPU) | wall ratio | CPU ratio "
          "| baseline B / dB | this B / dB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for image in images:
        name = Path(image).name
        for effort in a.efforts.split(","):
            med = {}
            for side in sides:
                rs = [r for r in rows if r["side"] == side and r["image"] == name
                      and r["effort"] == effort]
                keys = ("wall_s", "cpu_s", "bytes", "psnr") + (
                    ("hole_psnr", "inpaint_wall_s", "inpaint_cpu_s") if a.mask else ())
                med[side] = {k: statistics.median(r[k] for r in rs) for k in keys}
            b, t = med["baseline"], med["this"]
            summary.append({"image": name, "effort": effort, **{
                f"{s}_{k}": v for s, m in med.items() for k, v in m.items()},
                "wall_ratio": t["wall_s"] / b["wall_s"], "cpu_ratio": t["cpu_s"] / b["cpu_s"]})
            print(f"| {name} | {effort} | {b['wall_s']:.1f} ({b['cpu_s']:.1f}) | "
                  f"{t['wall_s']:.1f} ({t['cpu_s']:.1f}) | {t['wall_s'] / b['wall_s']:.2f} | "
                  f"{t['cpu_s'] / b['cpu_s']:.2f} | {b['bytes']:.0f} / {b['psnr']:.2f} | "
                  f"{t['bytes']:.0f} / {t['psnr']:.2f} |")
            if a.mask:
                print(f"|   masked: hole dB {b['hole_psnr']:.2f} -> {t['hole_psnr']:.2f}; "
                      f"inpaint s {b['inpaint_wall_s']:.2f} ({b['inpaint_cpu_s']:.2f}) -> "
                      f"{t['inpaint_wall_s']:.2f} ({t['inpaint_cpu_s']:.2f}) |")
    commits = {side: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
               for side, path in sides.items()}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"command": " ".join(["python", "benchmarks/encode_time.py",
                                                       *(sys.argv[1:] if argv is None else argv)]),
                                  "commits": commits, "threads": a.threads,
                                  "mask": a.mask or None,
                                  "cpu_count": os.cpu_count(),
                                  "summary": summary, "encodes": rows}, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
