"""Benchmark one fitting step and one colour solve on the compiled CPU kernel: the one-pass
kernel calls (what the encoder used before kernel plans) against plans and the fused loss.

    python benchmarks/bench_fit_step.py [--image kodim05.png] [--gaussians 2359]
                                        [--threads 1,2] [--repeat 15] [--json OUT]

The Gaussians are the encoder's start on a real image (structure-guided placement, colours
by least squares), so sizes and overlaps are those a fit sees. For each thread count, the
arms run interleaved, round after round, and each reports the minimum over --repeat rounds
(the least disturbed run on a shared machine) in ms:

    separate     forward() + backward(): two passes, each solving spans and weights
    plan         Plan(...) + plan.forward + plan.backward: the weights of the forward kept
    fused        Plan(...) + plan.loss_backward: render, squared error and gradients in one call
    cg_separate  12 conjugate-gradient steps of the colour solve on forward() + backward()
    cg_plan      the same 12 steps on one plan (forward + adjoint)

and the ratio of each to its baseline. Writes benchmarks/results/bench_fit_step.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gscodec.render import kernel

CG_STEPS = 12


def start_geometry(image: Path, n: int):
    """The encoder's starting Gaussians for `image`: float32 means, conics, colours."""
    import torch
    from PIL import Image

    from gscodec.encoder.fit import FitConfig, Fitter
    img = np.asarray(Image.open(image).convert("RGB"))
    p = Fitter(img, FitConfig()).start(n)
    with torch.no_grad():
        arrays = (p.pos, p.conics(), p.color)
        m, q, c = (np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in arrays)
    return m, q, c, img.astype(np.float32) / 255.0


def arms(ext, m, q, c, target, nt):
    h, w, _ = target.shape
    scale = 1.0 / target.size
    grad = np.ascontiguousarray(2 * scale * (ext.forward(m, q, c, h, w, nt) - target),
                                dtype=np.float32)

    def separate():
        ext.forward(m, q, c, h, w, nt)
        ext.backward(m, q, c, grad, nt)

    def plan():
        p = ext.Plan(m, q, h, w, nt)
        p.forward(c, nt)
        p.backward(c, grad, nt)

    def fused():
        ext.Plan(m, q, h, w, nt).loss_backward(c, target, None, scale, nt)

    def cg(fwd, adj):
        # The colour solve's passes: one forward and one adjoint per step (the arithmetic
        # between them is the same for both arms and left out).
        x = c
        for _ in range(CG_STEPS):
            x = adj(fwd(x))

    def cg_separate():
        cg(lambda x: ext.forward(m, q, x, h, w, nt),
           lambda v: ext.backward(m, q, c, v, nt)[2])

    def cg_plan():
        p = ext.Plan(m, q, h, w, nt)
        cg(lambda x: p.forward(x, nt), lambda v: p.adjoint(v, nt))

    return {"separate": separate, "plan": plan, "fused": fused,
            "cg_separate": cg_separate, "cg_plan": cg_plan}


BASELINE = {"plan": "separate", "fused": "separate", "cg_plan": "cg_separate"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(ROOT.parent / "shared/datasets/kodak/kodim05.png"))
    ap.add_argument("--gaussians", type=int, default=2359)
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
    m, q, c, target = start_geometry(image, a.gaussians)
    plan = ext.Plan(m, q, target.shape[0], target.shape[1])
    rows = []
    print(f"{image.name} {target.shape[1]}x{target.shape[0]}, {len(m)} Gaussians, "
          f"{plan.evaluations / (target.shape[0] * target.shape[1]):.1f} evaluations/pixel, "
          f"kernel ISA {ext.isa()}; min of {a.repeat} interleaved rounds, ms")
    print(f"{'threads':>7} {'arm':>12} {'ms':>9} {'ratio':>7}")
    for nt in (int(t) for t in a.threads.split(",")):
        fns = arms(ext, m, q, c, target, nt)
        for fn in fns.values():
            fn()  # warm-up (the plans' weight buffers are pooled after the first)
        best = {k: float("inf") for k in fns}
        for _ in range(a.repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
        for k, ms in best.items():
            ratio = ms / best[BASELINE[k]] if k in BASELINE else None
            rows.append({"threads": nt, "arm": k, "ms": round(ms, 3),
                         "ratio_to_baseline": None if ratio is None else round(ratio, 3),
                         "baseline": BASELINE.get(k)})
            print(f"{nt:>7} {k:>12} {ms:>9.2f} {'' if ratio is None else f'{ratio:.2f}x':>7}")
    import os
    import platform
    cpu_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"command": " ".join(["python", "benchmarks/bench_fit_step.py", *(argv or sys.argv[1:])]),
           "machine": {"cpu": cpu_name, "cpu_count": os.cpu_count(),
                       "platform": platform.platform()},
           "image": image.name, "gaussians": len(m), "evaluations": plan.evaluations,
           "cg_steps": CG_STEPS, "repeat": a.repeat, "isa": ext.isa(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
