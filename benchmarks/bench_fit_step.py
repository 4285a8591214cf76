"""Benchmark one fitting step and one colour solve on the compiled CPU kernel: the fitting
kernel (FitPlan) against the exact plan (Plan, the decoder's arithmetic) and, with --base,
against another checkout's kernel (the starting code), interleaved in one run.

    python benchmarks/bench_fit_step.py [--image kodim05.png] [--gaussians 2359]
                                        [--geometry FILE.npz] [--base CHECKOUT]
                                        [--threads 1,2] [--repeat 15] [--json OUT]

The Gaussians are the encoder's start on a real image (structure-guided placement, colours
by least squares), or those of FILE.npz (arrays means, conics, colors: e.g. a fitted set,
`profile_encode.py --save-geometry`). For each thread count, the arms run interleaved,
round after round, and each reports the minimum over --repeat rounds (the least disturbed
run on a shared machine) in ms of wall time and of process CPU time (steadier on a shared
machine), and ns per Gaussian-pixel evaluation (the exact `Plan.evaluations` of one pass;
a step is one forward and one backward, and so is a colour-solve step):

    exact         Plan(...) + plan.loss_backward: render, squared error and gradients
    fit           FitPlan(...) + loss_backward: the same with the fitting kernel
    base          the --base checkout's Plan(...) + loss_backward
    cg_exact      12 conjugate-gradient steps of the colour solve on one Plan (forward + adjoint)
    cg_fit        the same 12 steps on one FitPlan (forward + adjoint)
    cg_fit_fused  12 steps of FitPlan.loss_backward(geometry=False): A^T A x in one pass
    cg_base       12 steps on the --base checkout's Plan

and the ratio of each to its baseline (base or exact). Writes
benchmarks/results/bench_fit_step.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gscodec.render import kernel  # noqa: E402

CG_STEPS = 12


def start_geometry(image: Path, n: int):
    """The encoder's starting Gaussians for `image`: float32 means, conics, colours."""
    import torch

    from gscodec.encoder.fit import FitConfig, Fitter
    p = Fitter(load_image(image), FitConfig()).start(n)
    with torch.no_grad():
        arrays = (p.xy, p.conics(), p.color)
        return tuple(np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in arrays)


def load_image(image: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(image).convert("RGB"))


def load_base(checkout: Path):
    """The compiled kernel of another checkout (built in place), under its own name."""
    found = sorted((checkout / "gscodec").glob("_raster*.so")) + \
        sorted((checkout / "gscodec").glob("_raster*.pyd"))
    if not found:
        raise FileNotFoundError(f"no built kernel gscodec/_raster*.so in {checkout}")
    spec = importlib.util.spec_from_file_location("gscodec_base._raster", found[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arms(ext, base, m, q, c, target, nt):
    h, w, _ = target.shape
    scale = 1.0 / target.size

    def step(mod, cls):
        return lambda: getattr(mod, cls)(m, q, h, w, nt).loss_backward(c, target, None, scale,
                                                                        nt)

    def cg(mod, cls, fused=False):
        # The colour solve's passes: one forward and one adjoint per step (the arithmetic
        # between them is the same for every arm and left out).
        def run():
            p = getattr(mod, cls)(m, q, h, w, nt)
            x = c
            for _ in range(CG_STEPS):
                if fused:
                    x = p.loss_backward(x, None, None, 0.5, nt, geometry=False)[1]
                else:
                    x = p.adjoint(p.forward(x, nt), nt)
        return run

    out = {"exact": step(ext, "Plan"), "fit": step(ext, "FitPlan")}
    if base is not None:
        out["base"] = step(base, "Plan")
    out.update(cg_exact=cg(ext, "Plan"), cg_fit=cg(ext, "FitPlan"),
               cg_fit_fused=cg(ext, "FitPlan", fused=True))
    if base is not None:
        out["cg_base"] = cg(base, "Plan")
    return out


def baselines(has_base: bool) -> dict:
    step, cg = ("base", "cg_base") if has_base else ("exact", "cg_exact")
    out = {"fit": step, "cg_fit": cg, "cg_fit_fused": cg}
    if has_base:
        out.update(exact="base", cg_exact="cg_base")
    return out


def passes(arm: str) -> int:
    """Passes over the evaluations in one run of the arm (a step: forward and backward)."""
    return 2 * CG_STEPS if arm.startswith("cg_") else 2


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def measure(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Minimum wall and process CPU time (ms) of each arm over `repeat` interleaved rounds.
    On a shared machine the CPU time is the steadier figure of the two."""
    for fn in fns.values():
        fn()  # warm-up (the plans' weight buffers are pooled after the first)
    best = {k: float("inf") for k in fns}
    best_cpu = dict(best)
    for _ in range(repeat):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
            best_cpu[k] = min(best_cpu[k], (time.process_time() - c0) * 1e3)
    return best, best_cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(ROOT.parent / "shared/datasets/kodak/kodim05.png"))
    ap.add_argument("--gaussians", type=int, default=2359)
    ap.add_argument("--geometry", default=None)
    ap.add_argument("--base", default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/bench_fit_step.json"))
    a = ap.parse_args(argv)
    ext = kernel.kernel()
    if ext is None:
        print(f"error: compiled kernel unavailable: {kernel.unavailable_reason()}", file=sys.stderr)
        return 1
    image = Path(a.image)
    if not image.is_file():
        print(f"error: no image at {image}", file=sys.stderr)
        return 1
    try:
        base = load_base(Path(a.base)) if a.base else None
    except (OSError, ImportError) as exc:
        print(f"error: --base: {exc}", file=sys.stderr)
        return 1
    target = np.ascontiguousarray(load_image(image), dtype=np.float32) / np.float32(255.0)
    if a.geometry:
        with np.load(a.geometry) as z:
            m, q, c = (np.ascontiguousarray(z[k], dtype=np.float32)
                       for k in ("means", "conics", "colors"))
    else:
        m, q, c = start_geometry(image, a.gaussians)
    evaluations = ext.Plan(m, q, target.shape[0], target.shape[1]).evaluations
    ref = baselines(base is not None)
    rows = []
    print(f"{image.name} {target.shape[1]}x{target.shape[0]}, {len(m)} Gaussians, "
          f"{evaluations / (target.shape[0] * target.shape[1]):.1f} evaluations/pixel, "
          f"kernel ISA {ext.isa()} (fit {ext.fit_isa()}); min of {a.repeat} interleaved "
          f"rounds")
    print(f"{'threads':>7} {'arm':>13} {'ms':>9} {'ns/eval':>8} {'ratio':>7} {'cpu ms':>9} "
          f"{'cpu ns':>7} {'ratio':>7}  baseline")
    for nt in (int(t) for t in a.threads.split(",")):
        best, cpu = measure(arms(ext, base, m, q, c, target, nt), a.repeat)
        for k, ms in best.items():
            per = passes(k) / 2 * evaluations / 1e6 if evaluations else float("inf")
            ratio = ms / best[ref[k]] if k in ref else None
            cratio = cpu[k] / cpu[ref[k]] if k in ref else None
            rows.append({"threads": nt, "arm": k, "ms": round(ms, 3),
                         "ns_per_eval": round(ms / per, 3),
                         "ratio_to_baseline": None if ratio is None else round(ratio, 3),
                         "cpu_ms": round(cpu[k], 3), "cpu_ns_per_eval": round(cpu[k] / per, 3),
                         "cpu_ratio_to_baseline": None if cratio is None else round(cratio, 3),
                         "baseline": ref.get(k)})
            print(f"{nt:>7} {k:>13} {ms:>9.2f} {ms / per:>8.2f} "
                  f"{'' if ratio is None else f'{ratio:.3f}x':>7} {cpu[k]:>9.2f} "
                  f"{cpu[k] / per:>7.2f} {'' if cratio is None else f'{cratio:.3f}x':>7}  "
                  f"{ref.get(k, '')}")
    out = {"command": " ".join(["python", "benchmarks/bench_fit_step.py", *(argv or sys.argv[1:])]),
           "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
                       "platform": platform.platform(), "load_average": list(os.getloadavg())},
           "image": image.name, "geometry": a.geometry, "base": a.base, "gaussians": len(m),
           "evaluations": evaluations, "ns_per_eval": "per forward+backward evaluation "
           "(a colour-solve step counted as one)", "cg_steps": CG_STEPS, "repeat": a.repeat,
           "isa": ext.isa(), "fit_isa": ext.fit_isa(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
