"""Benchmark one fitting step of `--tune psnr` against the ways of adding an MS-SSIM term
(`--tune ssim`), on the compiled CPU kernel.

    python benchmarks/bench_tune_step.py [--image kodim05.png] [--gaussians 2359]
                                         [--threads 1] [--repeat 10] [--json OUT]

The Gaussians are the encoder's start on a real image. Each arm computes a loss and its
gradients in the means, conics and colours; the arms run interleaved, round after round,
and each reports the median over --repeat rounds of its CPU time (the process's, all
threads: on a shared machine the wall clock of one round says more about the neighbours
than about the arm) and of its wall time, in ms, and the ratios to `fused`:

    fused        the kernel's render + squared error + gradients in one call (--tune psnr)
    render_mse   render (autograd: plan forward, plan backward with grad_out) + F.mse_loss
    ssim_full    render_mse + MS-SSIM of the whole image (5 scales), one backward
    ssim_pooled  render_mse + MS-SSIM of the render pooled 2x2 (its 4 coarser scales)
    ssim_pooled4 render_mse + MS-SSIM of the render pooled 4x4 (its 3 coarsest scales)

MS-SSIM against the fixed target through `encoder.msssim.MSSSIMTo` (the target's side
computed once).

Writes benchmarks/results/bench_tune_step.json (or --json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def setup(image: Path, n: int):
    import numpy as np
    import torch
    from PIL import Image

    from gscodec.encoder.fit import FitConfig, Fitter
    img = np.asarray(Image.open(image).convert("RGB"))
    p = Fitter(img, FitConfig()).start(n)
    target = torch.from_numpy(img.astype(np.float32) / 255.0)
    return p, target


def arms(p, target):
    import torch
    import torch.nn.functional as F

    from gscodec.encoder.msssim import MSSSIMTo
    from gscodec.encoder.params import GaussianParams
    from gscodec.render.kernel_torch import render_cpu, render_mse_cpu
    h, w, c = target.shape
    scale = 1.0 / target.numel()
    pos, scl, rot, col = (t.detach().clone().requires_grad_(True)
                          for t in (p.pos, p.scale, p.rot, p.color))
    q = GaussianParams(pos, scl, rot, col)
    nchw = target.permute(2, 0, 1)[None]
    full = MSSSIMTo(nchw)
    pooled = MSSSIMTo(F.avg_pool2d(nchw, 2), scales=4, first=1)
    pooled4 = MSSSIMTo(F.avg_pool2d(nchw, 4), scales=3, first=2)

    def grads(loss):
        loss.backward()
        for t in (pos, scl, rot, col):
            t.grad = None

    def fused():
        grads(render_mse_cpu(q.pos, q.conics(), q.color, target, None, scale))

    def render_mse():
        out = render_cpu(q.pos, q.conics(), q.color, h, w)
        grads(F.mse_loss(out, target))

    def with_ssim(ms, pool):
        def arm():
            out = render_cpu(q.pos, q.conics(), q.color, h, w)
            x = out.permute(2, 0, 1)[None]
            x = F.avg_pool2d(x, pool) if pool > 1 else x
            grads(torch.log(F.mse_loss(out, target)) + torch.log1p(-ms(x)))
        return arm

    return {"fused": fused, "render_mse": render_mse, "ssim_full": with_ssim(full, 1),
            "ssim_pooled": with_ssim(pooled, 2), "ssim_pooled4": with_ssim(pooled4, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path,
                    default=ROOT.parent / "shared" / "datasets" / "kodak" / "kodim05.png")
    ap.add_argument("--gaussians", type=int, default=2359)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "bench_tune_step.json")
    a = ap.parse_args(argv)
    # As `import gscodec` does before torch: OpenMP threads that wait passively.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    p, target = setup(a.image, a.gaussians)
    cmd = ["python", "benchmarks/bench_tune_step.py", *(sys.argv[1:] if argv is None else argv)]
    out = {"image": a.image.name, "gaussians": a.gaussians, "repeat": a.repeat,
           "command": " ".join(cmd), "threads": {}}
    for nt in (int(t) for t in a.threads.split(",")):
        torch.set_num_threads(nt)
        fns = arms(p, target)
        cpu = {k: [] for k in fns}
        wall = {k: [] for k in fns}
        for _ in range(a.repeat):
            for k, fn in fns.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                cpu[k].append(time.process_time() - c0)
                wall[k].append(time.perf_counter() - t0)
        med = {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in fns}
        out["threads"][nt] = {k: {"cpu_ms": round(c * 1e3, 2), "wall_ms": round(w * 1e3, 2),
                                  "cpu_ratio": round(c / med["fused"][0], 3)}
                              for k, (c, w) in med.items()}
        print(f"threads {nt}, CPU ms (x fused): " + ", ".join(
            f"{k} {c * 1e3:.1f} ({c / med['fused'][0]:.2f}x)" for k, (c, w) in med.items()))
        print(f"threads {nt}, wall ms (x fused): " + ", ".join(
            f"{k} {w * 1e3:.1f} ({w / med['fused'][1]:.2f}x)" for k, (c, w) in med.items()))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
