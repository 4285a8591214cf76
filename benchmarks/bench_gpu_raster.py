"""GPU renderer benchmark at 768x512: our Triton kernel vs the PyTorch reference vs gsplat.

    python benchmarks/bench_gpu_raster.py [--sizes 1000,10000,70000] [--repeat 50]
                                          [--fit-n 10000] [--graphs] [--json OUT]

For each N (same random Gaussians as benchmarks/bench_raster.py, already on the device):
  * render-only: Gaussians on the GPU -> float32 image [H, W, 3] (binning + rasterization),
    timed with CUDA events after warm-up; median ms and FPS. With --graphs the Triton render
    is also captured in a CUDA graph and replayed (no host overhead; the pipeline has no
    host synchronisation, so capture works as is).
  * forward+backward: one fit iteration's renderer cost (render, then gradients w.r.t.
    means, conics and colours) at --fit-n Gaussians, default and deterministic backward.
Launches per render: 6 at 768x512 (binning 5, raster 1; test_launches_per_render_at_10k).
Backends: "triton" (gscodec.render.triton), "reference" (pure PyTorch; it builds its pixel
grids on the CPU, so if it cannot run on the GPU it is timed on the CPU and labelled so;
skipped above --reference-max Gaussians), and "gsplat" (rasterize_to_pixels with
isect_tiles, if gsplat imports and its CUDA extension builds). gsplat alpha-composites
front to back instead of summing, so its images differ: compare speed only.
Results: a table and JSON under benchmarks/results/gpu/ (GPU name, driver, torch and triton
versions). Without a CUDA GPU the script says so and exits with status 0.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WIDTH, HEIGHT = 768, 512
TILE = 16


def gpu_info():
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "python": platform.python_version()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        info["triton"] = f"unavailable: {exc}"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False)
        info["nvidia_smi"] = out.stdout.strip().splitlines()[0] if out.stdout else None
        info["driver"] = info["nvidia_smi"].split(",")[0].strip() if info["nvidia_smi"] else None
    except Exception as exc:  # noqa: BLE001
        info["driver"] = f"unknown ({exc})"
    return info


def cuda_time(fn, repeat, warmup=3):
    """Median milliseconds of fn() by CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def cpu_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def graph_time(fn, repeat):
    """Capture fn() in a CUDA graph and time its replay (ms)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return cuda_time(g.replay, repeat)


def gsplat_renderer():
    """(render function or None, note). The function takes our (means, conics, colors).
    Only a gsplat with its CUDA extension prebuilt (gsplat.csrc): otherwise its first call
    compiles CUDA code for minutes."""
    import importlib.util
    try:
        if importlib.util.find_spec("gsplat") is None:
            return None, "gsplat not installed"
        if importlib.util.find_spec("gsplat.csrc") is None:
            return None, "gsplat has no prebuilt CUDA extension (gsplat.csrc): skipped"
        import gsplat
        from gsplat import isect_offset_encode, isect_tiles, rasterize_to_pixels
    except Exception as exc:  # noqa: BLE001
        return None, f"gsplat does not import: {type(exc).__name__}: {exc}"

    tw, th = math.ceil(WIDTH / TILE), math.ceil(HEIGHT / TILE)

    def render(means, conics, colors, radii2):
        m2 = means[None]
        depths = torch.ones(1, means.shape[0], device=means.device)
        try:
            _, isect_ids, flatten_ids = isect_tiles(m2, radii2[None], depths, TILE, tw, th)
        except Exception:  # noqa: BLE001 - older gsplat: radii [C, N]
            _, isect_ids, flatten_ids = isect_tiles(
                m2, radii2.max(dim=1).values[None], depths, TILE, tw, th)
        offsets = isect_offset_encode(isect_ids, 1, tw, th)
        opac = torch.ones(1, means.shape[0], device=means.device)
        img, _ = rasterize_to_pixels(m2, conics[None], colors[None], opac, WIDTH, HEIGHT, TILE,
                                     offsets, flatten_ids)
        return img[0]

    return render, f"gsplat {getattr(gsplat, '__version__', '?')}"


def radii_of(conics):
    a, b, c = conics[:, 0].double(), conics[:, 1].double(), conics[:, 2].double()
    det = a * c - b * b
    rx = torch.ceil(torch.sqrt(12.0 * c / det)).int()
    ry = torch.ceil(torch.sqrt(12.0 * a / det)).int()
    return torch.stack([rx, ry], dim=1).contiguous()


def file_to_pixels(n, means, conics, colors, report, notes):
    """Time a whole decode of a .gsi holding these Gaussians (quantized and written with the
    format's default steps): entropy decoding on the CPU, then pixels on the GPU (the
    decoder's exact mode) and on the CPU kernel; and check that both give the same bytes."""
    try:
        import numpy as np

        import gscodec
        from gscodec.bitstream import format as gsi_format
        from gscodec.encoder.params import GaussianParams
        from gscodec.encoder.quantize import QuantConfig, to_integers
        # back from conics to (sigma, theta): eigen-decomposition of the covariance
        a, b, c = (conics[:, i].double().cpu() for i in range(3))
        cov = torch.linalg.inv(torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2))
        evals, evecs = torch.linalg.eigh(cov)
        sig = evals.clamp(min=1e-6).sqrt().flip(-1)
        theta = torch.atan2(evecs[:, 1, 1], evecs[:, 0, 1])
        p = GaussianParams(means.cpu().float(), torch.log2(sig).float(), theta.float(),
                           colors.cpu().float())
        data = gsi_format.write(to_integers(p, QuantConfig(), WIDTH, HEIGHT))
        gpu = gscodec.decode(data, device="cuda")
        cpu = gscodec.decode(data, device="cpu")
        same = bool(np.array_equal(gpu, cpu))
        for dev in ("cuda", "cpu"):
            ms = cpu_time(lambda d=dev: gscodec.decode(data, device=d), 20)
            report(n, f"file->pixels {dev}", ms,
                   extra={"bytes": len(data), "identical_to_cpu": same})
    except Exception as exc:  # noqa: BLE001
        notes.append(f"file-to-pixels failed at N={n}: {type(exc).__name__}: {exc}")


class Report:
    """The rows so far, printed as a table and written to JSON after every row (a run cut
    short keeps what it measured)."""

    def __init__(self, path, info, repeat, notes):
        self.path, self.info, self.repeat, self.notes = path, info, repeat, notes
        self.render, self.fb = [], []

    def save(self):
        if self.path:
            path = Path(self.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"machine": self.info, "repeat": self.repeat,
                                        "render": self.render, "forward_backward": self.fb,
                                        "notes": self.notes}, indent=2) + "\n")

    def __call__(self, n, name, ms, gms=None, extra=None):
        row = {"n": n, "backend": name, "width": WIDTH, "height": HEIGHT,
               "render_ms": None if ms is None else round(ms, 4),
               "fps": None if ms is None else round(1e3 / ms, 1)}
        if gms is not None:
            row.update(graph_ms=round(gms, 4), graph_fps=round(1e3 / gms, 1))
        if extra:
            row.update(extra)
        self.render.append(row)
        fps = "" if ms is None else f"{1e3 / ms:9.1f}"
        ms_s = "n/a" if ms is None else f"{ms:10.3f}"
        g1 = "" if gms is None else f"{gms:9.3f}"
        g2 = "" if gms is None else f"{1e3 / gms:10.1f}"
        print(f"{n:>7} {name:>18} {ms_s:>10} {fps:>9} {g1:>9} {g2:>10}"
              + (f"  ({extra['note']})" if extra and 'note' in extra else ""), flush=True)
        self.save()


def bench_triton(n, means, conics, colors, args, report):
    from gscodec.render import triton as tb
    from gscodec.render.triton.binning import bin_gaussians

    def fn():
        return tb.render(means, conics, colors, HEIGHT, WIDTH)

    ms = cuda_time(fn, args.repeat)
    gms = None
    if args.graphs:
        try:
            gms = graph_time(fn, args.repeat)
        except Exception as exc:  # noqa: BLE001
            report.notes.append(f"CUDA graph capture failed at N={n}: {exc}")
    bn = bin_gaussians(means, conics, 0, HEIGHT, WIDTH)
    report(n, "triton", ms, gms, {"pairs": int(bn.total_pairs.item()),
                                  "pair_overflow": bool(bn.overflow.item()),
                                  "big_list": int(bn.n_big.item())})
    report(n, "triton exact",
           cuda_time(lambda: tb.render(means, conics, colors, HEIGHT, WIDTH, exact=True),
                     max(5, args.repeat // 5)),
           extra={"note": "the decoder's mode: spec section 10's bits"})


def bench_reference(n, means, conics, colors, args, report):
    from gscodec.render.torch_reference import render_reference
    if n > args.reference_max:
        report(n, "reference", None, extra={"note": f"skipped above {args.reference_max}"})
        return
    try:
        report(n, "reference (cuda)", cuda_time(
            lambda: render_reference(means, conics, colors, HEIGHT, WIDTH), 3, warmup=1))
    except Exception:  # noqa: BLE001 - the reference builds CPU pixel grids
        mc, qc, cc = means.cpu(), conics.cpu(), colors.cpu()
        report(n, "reference (cpu)",
               cpu_time(lambda: render_reference(mc, qc, cc, HEIGHT, WIDTH), 1))


def bench_fit(args, dev, gs_render, report):
    """One fit iteration's renderer cost: forward + backward."""
    from bench_raster import random_gaussians

    from gscodec.render import triton as tb
    print(f"\nforward+backward at N={args.fit_n}:")
    means, conics, colors = (t.to(dev) for t in random_gaussians(args.fit_n))
    grad = torch.randn(HEIGHT, WIDTH, 3, device=dev)
    steps = {"triton atomic": lambda ts: tb.render(*ts, HEIGHT, WIDTH),
             "triton deterministic":
                 lambda ts: tb.render(*ts, HEIGHT, WIDTH, deterministic=True)}
    if gs_render is not None:
        r2 = radii_of(conics)
        steps["gsplat (alpha)"] = lambda ts: gs_render(*ts, r2)
    for name, render in steps.items():
        def step(render=render):
            ts = [t.clone().requires_grad_(True) for t in (means, conics, colors)]
            torch.autograd.grad(render(ts), ts, grad)
        try:
            ms = cuda_time(step, max(5, args.repeat // 5))
        except Exception as exc:  # noqa: BLE001
            report.notes.append(f"{name} backward failed: {type(exc).__name__}: {exc}")
            continue
        print(f"  {name:>22}: {ms:8.3f} ms")
        report.fb.append({"n": args.fit_n, "backend": name, "forward_backward_ms": round(ms, 4)})
        report.save()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,70000")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--fit-n", type=int, default=10000)
    ap.add_argument("--reference-max", type=int, default=10000)
    ap.add_argument("--graphs", action="store_true", help="also time CUDA-graph replay")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu"
                                          / "bench_gpu_raster.json"))
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_gpu_raster: no CUDA GPU available (torch.cuda.is_available() is False); "
              "nothing to benchmark.")
        return 0
    from gscodec.render import triton as tb
    if not tb.available():
        print(f"bench_gpu_raster: Triton backend unavailable: {tb.unavailable_reason()}")
        return 0
    from bench_raster import random_gaussians

    dev = torch.device("cuda")
    info = gpu_info()
    print(f"{WIDTH}x{HEIGHT}, {info['gpu']}, driver {info.get('driver')}, torch {info['torch']},"
          f" triton {info['triton']}")
    gs_render, gs_note = gsplat_renderer()
    notes = [gs_note]
    if gs_render is not None:
        notes.append("gsplat alpha-composites (front to back) instead of summing: its images "
                     "differ from ours; compare speed only")
    report = Report(args.json, info, args.repeat, notes)
    hdr = f"{'N':>7} {'backend':>18} {'render ms':>10} {'FPS':>9} {'graph ms':>9} {'graph FPS':>10}"
    print(hdr)
    print("-" * len(hdr))
    for n in [int(s) for s in args.sizes.split(",") if s]:
        means, conics, colors = (t.to(dev) for t in random_gaussians(n))
        with torch.no_grad():
            bench_triton(n, means, conics, colors, args, report)
            file_to_pixels(n, means, conics, colors, report, notes)
            bench_reference(n, means, conics, colors, args, report)
            if gs_render is not None:
                try:
                    r2 = radii_of(conics)
                    report(n, "gsplat (alpha)", cuda_time(
                        lambda m=means, q=conics, c=colors, r=r2: gs_render(m, q, c, r),
                        args.repeat))
                except Exception as exc:  # noqa: BLE001
                    notes.append(f"gsplat failed at N={n}: {type(exc).__name__}: {exc}")
        del means, conics, colors
    bench_fit(args, dev, gs_render, report)
    for note in notes:
        print(note)
    report.save()
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
