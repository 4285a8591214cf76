"""Benchmark the rendering backends on random, realistic Gaussians at 768x512.

    python benchmarks/bench_raster.py [--sizes 1000,10000,50000] [--repeat 3]
                                      [--backends cpu,reference] [--json OUT]

For each N and each available backend it measures forward ms and forward+backward ms
(median of --repeat runs after one warm-up; the slow reference: --reference-repeat runs,
default 1, no warm-up) and the speed ratio to the reference measured
in the same run. The reference is skipped above --reference-max (default 10000) Gaussians
because it is slow; the table says so. Results go to benchmarks/results/bench_raster.json.
New backends (e.g. "cuda", "gsplat") are added by registering a function in BACKENDS.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gscodec.bitstream.model import conics_from_scale_rot  # noqa: E402
from gscodec.render import available_backends, render  # noqa: E402

WIDTH, HEIGHT = 768, 512


def _render_with(name):
    def fn(means, conics, colors, height, width):
        return render(means, conics, colors, height, width, backend=name)
    return fn


# name -> (is_available() -> (bool, reason), render function, device string)
BACKENDS = {
    "cpu": (lambda: ("kernel" in available_backends(), "kernel did not build"),
            _render_with("kernel"), "cpu"),
    "reference": (lambda: (True, ""), _render_with("torch_reference"), "cpu"),
}


def random_gaussians(n, width=WIDTH, height=HEIGHT, channels=3, seed=0):
    """Realistic fitted-image statistics: uniform means, sigma ~ sqrt(W*H/N)/2 with a
    log-normal spread and anisotropy, random rotation, colours in [0, 0.3]."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([float(width), float(height)])
    base = math.sqrt(width * height / n) / 2
    log_sig = math.log(base) + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    sigma = torch.exp(log_sig).sort(dim=1, descending=True).values
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    conics = conics_from_scale_rot(sigma, theta).float()
    colors = torch.rand(n, channels, generator=g) * 0.3
    return means, conics, colors


def _timeit(fn, repeat, warmup=True):
    if warmup:
        fn()  # warm-up (and kernel build)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_one(render_fn, n, repeat, warmup=True):
    means, conics, colors = random_gaussians(n)
    grad = torch.randn(HEIGHT, WIDTH, colors.shape[1], generator=torch.Generator().manual_seed(1))

    def fwd():
        with torch.no_grad():
            render_fn(means, conics, colors, HEIGHT, WIDTH)

    def fwd_bwd():
        m, q, c = (t.clone().requires_grad_(True) for t in (means, conics, colors))
        img = render_fn(m, q, c, HEIGHT, WIDTH)
        torch.autograd.grad(img, (m, q, c), grad)

    return _timeit(fwd, repeat, warmup), _timeit(fwd_bwd, repeat, warmup)


def machine_info():
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(), "load_average_1_5_15": load,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--reference-repeat", type=int, default=1,
                    help="timed runs of the (slow) reference, without warm-up")
    ap.add_argument("--reference-max", type=int, default=10000,
                    help="skip the reference above this many Gaussians (slow)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results"
                                          / "bench_raster.json"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    names = [b for b in args.backends.split(",") if b]

    results, notes = [], []
    for name in names:
        ok, why = BACKENDS[name][0]()
        if not ok:
            notes.append(f"backend {name} unavailable: {why}")
    print(f"{WIDTH}x{HEIGHT}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = f"{'N':>7} {'backend':>10} {'fwd ms':>10} {'fwd+bwd ms':>11} " \
             f"{'fwd x ref':>10} {'f+b x ref':>10}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        row = {}
        for name in names:
            ok, _ = BACKENDS[name][0]()
            if not ok:
                continue
            if name == "reference" and n > args.reference_max:
                row[name] = None
                continue
            if name == "reference":
                row[name] = bench_one(BACKENDS[name][1], n, args.reference_repeat, False)
            else:
                row[name] = bench_one(BACKENDS[name][1], n, args.repeat)
        ref = row.get("reference")
        for name, val in row.items():
            entry = {"n": n, "backend": name, "width": WIDTH, "height": HEIGHT}
            if val is None:
                entry["skipped"] = f"reference skipped above {args.reference_max} Gaussians"
                print(f"{n:>7} {name:>10} {'skipped (too slow)':>22}")
            else:
                f, fb = val
                entry.update(forward_ms=round(f, 3), forward_backward_ms=round(fb, 3))
                rf = rfb = ""
                if ref is not None:
                    entry["forward_speedup_vs_reference"] = round(ref[0] / f, 2)
                    entry["forward_backward_speedup_vs_reference"] = round(ref[1] / fb, 2)
                    rf, rfb = f"{ref[0] / f:.1f}x", f"{ref[1] / fb:.1f}x"
                print(f"{n:>7} {name:>10} {f:>10.1f} {fb:>11.1f} {rf:>10} {rfb:>10}")
            results.append(entry)
    for note in notes:
        print(note)
    out = {"machine": machine_info(), "repeat": args.repeat,
           "reference_repeat": args.reference_repeat, "results": results,
           "notes": notes}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
