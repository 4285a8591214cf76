"""Decode speed of .gsi files against Pillow's WebP, AVIF, JPEG 2000 and JPEG, in one run.

For each Kodak image and each of three Gaussian densities, a .gsi file is encoded (a short
fit: decode time depends on the Gaussian count, not on the fit's quality) and each peer
is encoded at the quality whose file size is nearest. Then, interleaved:

- in-process: `gscodec.decode(bytes)` against `Image.open(BytesIO(bytes)).load()`
  (median of --repeats);
- whole process: `gsi decode x.gsi -o out.png` against a Python process that opens the
  WebP file with Pillow and saves it as PNG (median of 5 each, alternating).

    python benchmarks/decode_speed.py [KODAK_DIR] [--images 3] [--repeats 15]

Prints a table and writes benchmarks/results/decode_speed.json (ratios against the peers
are the figures to read: the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gscodec.benchmark.distortion import load_rgb  # noqa: E402
from gscodec.benchmark.peers import make_codec  # noqa: E402
from gscodec.benchmark.provenance import default_dataset, list_images, machine_info  # noqa: E402
from gscodec.benchmark.tasks import jsonable  # noqa: E402

DENSITIES = (2.0, 6.0, 16.0)        # Gaussians per 1000 pixels: about 0.1, 0.3, 0.8 bpp
PEERS = ("webp", "avif", "jpeg2000", "jpeg")
PEER_SWEEP = {"webp": range(0, 101), "avif": range(1, 101), "jpeg": range(1, 96),
              "jpeg2000": [x / 200 for x in range(4, 601)]}


def nearest(codec_name: str, rgb: np.ndarray, target: int) -> tuple[object, bytes]:
    """The codec's knob value whose file is nearest to `target` bytes (bisection on a
    monotone sweep), and that file."""
    codec = make_codec(codec_name)
    pts = list(PEER_SWEEP[codec_name])
    cache: dict = {}

    def size(i):
        if i not in cache:
            cache[i] = codec.encode(rgb, pts[i])[0]
        return len(cache[i])
    lo, hi = 0, len(pts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda i: abs(size(i) - target))
    return pts[best], cache[best]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def process_time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="?", type=Path, default=default_dataset())
    ap.add_argument("--images", type=int, default=3, help="first N images (default 3)")
    ap.add_argument("--iterations", type=int, default=100,
                    help="fit iterations of the .gsi files (default 100)")
    ap.add_argument("--repeats", type=int, default=15, help="in-process repeats (median)")
    ap.add_argument("--process-repeats", type=int, default=5, help="whole-process repeats")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "decode_speed.json")
    args = ap.parse_args(argv)
    if args.dataset is None or not Path(args.dataset).is_dir():
        print("decode_speed: give the Kodak folder", file=sys.stderr)
        return 2
    import gscodec
    gsi_cli = shutil.which("gsi") or f"{sys.executable} -m gscodec"
    work = Path(tempfile.mkdtemp(prefix="gsi-decode-speed-"))
    rows = []
    try:
        for path in list_images(args.dataset, args.images):
            rgb = load_rgb(path)
            h, w = rgb.shape[:2]
            for dens in DENSITIES:
                n = max(1, round(dens * h * w / 1000))
                data = gscodec.encode(rgb, gaussians=n, iterations=args.iterations)
                gsi_file = work / f"{path.stem}-{dens:g}.gsi"
                gsi_file.write_bytes(data)
                row = {"image": path.name, "density": dens, "gaussians": n,
                       "gsi": {"bytes": len(data), "bpp": 8 * len(data) / (h * w)}}
                peers = {}
                for name in PEERS:
                    point, pdata = nearest(name, rgb, len(data))
                    peers[name] = pdata
                    row[name] = {"point": point, "bytes": len(pdata),
                                 "bpp": 8 * len(pdata) / (h * w)}
                gscodec.decode(data)             # warm-up (thread pool, caches)
                # interleave: each round times every codec once
                times = {k: [] for k in ("gsi", *PEERS)}
                for _ in range(args.repeats):
                    times["gsi"].append(median_time(lambda data=data: gscodec.decode(data), 1))
                    for name, pdata in peers.items():
                        times[name].append(median_time(
                            lambda pdata=pdata: Image.open(io.BytesIO(pdata)).load(), 1))
                for k, ts in times.items():
                    row[k]["decode_ms"] = 1000 * statistics.median(ts)
                webp_file = work / f"{path.stem}-{dens:g}.webp"
                webp_file.write_bytes(peers["webp"])
                gsi_cmd = [*gsi_cli.split(), "decode", str(gsi_file), "-o", str(work / "o1.png")]
                pil_cmd = [sys.executable, "-c", "import sys; from PIL import Image; "
                           "Image.open(sys.argv[1]).save(sys.argv[2])", str(webp_file),
                           str(work / "o2.png")]
                pt = {"gsi": [], "webp": []}
                process_time(gsi_cmd)          # warm the file cache
                for _ in range(args.process_repeats):
                    pt["gsi"].append(process_time(gsi_cmd))
                    pt["webp"].append(process_time(pil_cmd))
                row["gsi"]["process_s"] = statistics.median(pt["gsi"])
                row["webp"]["process_s"] = statistics.median(pt["webp"])
                rows.append(row)
                print(f"{path.name} d={dens:g}: gsi {row['gsi']['bpp']:.3f} bpp "
                      f"{row['gsi']['decode_ms']:.1f} ms | "
                      + " | ".join(f"{k} {row[k]['bpp']:.3f} bpp {row[k]['decode_ms']:.1f} ms"
                                   for k in PEERS)
                      + f" | process gsi {row['gsi']['process_s']:.3f} s, "
                        f"webp {row['webp']['process_s']:.3f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a, b, key):
        return statistics.median(r[a][key] / r[b][key] for r in rows)
    summary = {f"decode_gsi_over_{p}": ratio("gsi", p, "decode_ms") for p in PEERS}
    summary["process_gsi_over_webp"] = ratio("gsi", "webp", "process_s")
    print("\nmedian ratios (gsi / peer): " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    out = {"benchmark": "decode_speed", "dataset": Path(args.dataset).name,
           "images": args.images, "densities": DENSITIES, "iterations": args.iterations,
           "machine": machine_info(), "threads": os.environ.get("GSCODEC_NUM_THREADS"),
           "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(out), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
