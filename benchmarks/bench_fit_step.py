"""Benchmark one fitting step and one colour solve on the compiled CPU kernel: the fitting
kernel (FitPlan) against the exact plan (Plan, the decoder's arithmetic) and, with --base,
against another checkout's kernel (the starting code), interleaved in one run.

    python benchmarks/bench_fit_step.py [--image kodim05.png] [--gaussians 2359]
                                        [--geometry FILE.npz] [--base CHECKOUT]
                                        [--threads 1,2] [--repeat 15] [--json OUT]
                                        [--megapixels 0.4,1,2.8] [--waves]

The Gaussians are the encoder's start on a real image (structure-guided placement, colours
by least squares), or those of FILE.npz (arrays means, conics, colors: e.g. a fitted set,
`profile_encode.py --save-geometry`). For each thread count, the arms run interleaved,
round after round, and each reports the minimum over --repeat rounds (the least disturbed
run on a shared machine) in ms of wall time and of process CPU time (steadier on a shared
machine), and ns per Gaussian-pixel evaluation (the exact `Plan.evaluations` of one pass;
a step is one forward and one backward, and so is a colour-solve step):

    exact         Plan(...) + plan.loss_backward: render, squared error and gradients (the
                  plan keeps at most 2^25 weights, as the encoder had it)
    fit           FitPlan(...) + loss_backward: the same with the fitting kernel
    base          the --base checkout's Plan(...) + loss_backward
    cg_exact      12 conjugate-gradient steps of the colour solve on one Plan (forward + adjoint)
    cg_fit        the same 12 steps on one FitPlan (forward + adjoint)
    cg_fit_fused  12 steps of FitPlan.loss_backward(geometry=False): A^T A x in one pass
    cg_base       12 steps on the --base checkout's Plan

and, with --waves (format v5; a wave on every Gaussian, as the fit gives them: along one of
its axes, log2 frequency uniform in the fit's starting range, random phase), against fit:

    fit_waves0    FitPlan(..., waves) + loss_backward with every amplitude 0 (the fit's
                  start: the waves' gradients are still computed)
    fit_waves     the same with amplitudes uniform in [-0.5, 0.5]

and the ratio of each to its baseline (base or exact). Writes
benchmarks/results/bench_fit_step.json.

With --megapixels, the image is instead scaled (bicubic) to each size and started at the
default density (6 Gaussians per 1000 pixels); the fused step's arms (exact, fit, base) are
timed at the first --threads count, and each one's peak memory is measured in a fresh
process: the rise of its peak resident set over one plan and step, with the image and the
Gaussians already loaded. Writes benchmarks/results/bench_fit_step_sizes.json by default.
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
    return start_geometry_array(load_image(image), n)


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


def steps(ext, base, m, q, c, target, nt) -> dict:
    """The fused step's arms: exact, fit and (with a base kernel) base."""
    h, w, _ = target.shape
    scale = 1.0 / target.size

    def step(mod, cls):
        extra = (MAX_WEIGHTS,) if cls == "Plan" else ()
        return lambda: getattr(mod, cls)(m, q, h, w, nt, *extra).loss_backward(
            c, target, None, scale, nt)

    out = {"exact": step(ext, "Plan"), "fit": step(ext, "FitPlan")}
    if base is not None:
        out["base"] = step(base, "Plan")
    return out


def wave_set(q: np.ndarray, seed: int = 0) -> np.ndarray:
    """Waves [N, 4] (kx, ky, phase, amp) on Gaussians of conics q: along the major or minor
    axis at random, |k| = 2^u / sigma of that axis with u uniform in the fit's starting range
    (FitConfig.wave_start_logfreq), random phase, amplitude uniform in [-0.5, 0.5]."""
    from gscodec.encoder.config import FitConfig
    rng = np.random.default_rng(seed)
    n = len(q)
    mats = np.stack([q[:, 0], q[:, 1], q[:, 1], q[:, 2]], 1).reshape(n, 2, 2).astype(np.float64)
    lam, vec = np.linalg.eigh(mats)                 # lam = 1 / sigma^2, ascending
    axis = rng.integers(0, 2, n)
    sigma = 1.0 / np.sqrt(np.maximum(lam[np.arange(n), axis], 1e-12))
    k = np.exp2(rng.uniform(*FitConfig().wave_start_logfreq, n)) / sigma
    d = vec[np.arange(n), :, axis]
    return np.stack([k * d[:, 0], k * d[:, 1], rng.uniform(0, 2 * np.pi, n),
                     rng.uniform(-0.5, 0.5, n)], 1).astype(np.float32)


def wave_arms(ext, m, q, c, target, nt) -> dict:
    """The fused step with waves: fit_waves0 (amplitudes 0) and fit_waves."""
    h, w, _ = target.shape
    waves = wave_set(q)
    zero = waves.copy()
    zero[:, 3] = 0.0

    def step(wv):
        return lambda: ext.FitPlan(m, q, h, w, nt, wv).loss_backward(
            c, target, None, 1.0 / target.size, nt)
    return {"fit_waves0": step(zero), "fit_waves": step(waves)}


def arms(ext, base, m, q, c, target, nt, waves=False):
    h, w, _ = target.shape

    def cg(mod, cls, fused=False):
        # The colour solve's passes: one forward and one adjoint per step (the arithmetic
        # between them is the same for every arm and left out).
        def run():
            p = getattr(mod, cls)(m, q, h, w, nt, *((MAX_WEIGHTS,) if cls == "Plan" else ()))
            x = c
            for _ in range(CG_STEPS):
                if fused:
                    x = p.loss_backward(x, None, None, 0.5, nt, geometry=False)[1]
                else:
                    x = p.adjoint(p.forward(x, nt), nt)
        return run

    out = steps(ext, base, m, q, c, target, nt)
    out.update(cg_exact=cg(ext, "Plan"), cg_fit=cg(ext, "FitPlan"),
               cg_fit_fused=cg(ext, "FitPlan", fused=True))
    if base is not None:
        out["cg_base"] = cg(base, "Plan")
    if waves:
        out.update(wave_arms(ext, m, q, c, target, nt))
    return out


def baselines(has_base: bool) -> dict:
    step, cg = ("base", "cg_base") if has_base else ("exact", "cg_exact")
    out = {"fit": step, "cg_fit": cg, "cg_fit_fused": cg, "fit_waves0": "fit",
           "fit_waves": "fit"}
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


DENSITY = 6.0   # Gaussians per 1000 pixels: the encoder's default (encoder/api.py)
# Weights an exact plan keeps, as the encoder asked of it (kernel_torch.MAX_PLAN_WEIGHTS):
# larger geometries recompute them in each pass.
MAX_WEIGHTS = 1 << 25

_PROBE = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r} + "/benchmarks")
from bench_fit_step import load_base
from gscodec import _raster as ext
mod = load_base(__import__("pathlib").Path({base!r})) if {base!r} else ext
with np.load({npz!r}) as z:
    m, q, c, t = (np.ascontiguousarray(z[k]) for k in ("means", "conics", "colors", "target"))
h, w, _ = t.shape
def status(key):  # kB
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
try:  # reset the peak (Linux >= 4.0), so that it is this step's
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
except OSError:
    status = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
extra = ({max_weights},) if {cls!r} == "Plan" else ()
getattr(mod, {cls!r})(m, q, h, w, {nt}, *extra).loss_backward(c, t, None, 1.0 / t.size, {nt})
after = status("VmHWM") if status else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def peak_memory(npz: str, cls: str, nt: int, base: str | None) -> int | None:
    """Rise of the peak resident set (bytes) of a fresh process over one plan and fused
    step, above its resident set before (Linux: the peak reset through clear_refs; else the
    rise of ru_maxrss, which misses a step's peak below the import's); None where it cannot
    be measured."""
    import subprocess
    code = _PROBE.format(root=str(ROOT), base=base or "", npz=npz, cls=cls, nt=nt,
                         max_weights=MAX_WEIGHTS)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=600)
        return int(out.stdout.split()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def sizes_run(ext, base, image: Path, a) -> list[dict]:
    """The fused step at several image sizes, default density: time and peak memory."""
    import tempfile

    from PIL import Image
    nt = int(a.threads.split(",")[0])
    src = Image.open(image).convert("RGB")
    rows = []
    print(f"{'MP':>5} {'size':>11} {'N':>6} {'arm':>6} {'ms':>9} {'cpu ms':>9} {'ns/eval':>8} "
          f"{'peak MB':>8}")
    for mp in (float(x) for x in a.megapixels.split(",")):
        f = (mp * 1e6 / (src.width * src.height)) ** 0.5
        img = np.asarray(src.resize((round(src.width * f), round(src.height * f)),
                                    Image.BICUBIC))
        target = np.ascontiguousarray(img, dtype=np.float32) / np.float32(255.0)
        h, w, _ = target.shape
        n = int(round(DENSITY * h * w / 1000.0))
        m, q, c = start_geometry_array(img, n)
        evaluations = ext.Plan(m, q, h, w, nt, 0).evaluations
        fns = steps(ext, base, m, q, c, target, nt)
        best, cpu = measure(fns, a.repeat)
        with tempfile.TemporaryDirectory() as tmp:
            npz = str(Path(tmp) / "case.npz")
            np.savez(npz, means=m, conics=q, colors=c, target=target)
            for arm in fns:
                peak = peak_memory(npz, "FitPlan" if arm == "fit" else "Plan", nt,
                                   a.base if arm == "base" else None)
                rows.append({"megapixels": round(h * w / 1e6, 3), "height": h, "width": w,
                             "gaussians": n, "evaluations": evaluations, "threads": nt,
                             "arm": arm, "ms": round(best[arm], 3), "cpu_ms": round(cpu[arm], 3),
                             "ns_per_eval": round(best[arm] * 1e6 / evaluations, 3),
                             "peak_bytes": peak})
                print(f"{h * w / 1e6:>5.2f} {w:>5}x{h:<5} {n:>6} {arm:>6} {best[arm]:>9.2f} "
                      f"{cpu[arm]:>9.2f} {best[arm] * 1e6 / evaluations:>8.2f} "
                      f"{'-' if peak is None else f'{peak / 2**20:.1f}':>8}")
    return rows


def start_geometry_array(img: np.ndarray, n: int):
    """start_geometry for an image array."""
    import torch

    from gscodec.encoder.fit import FitConfig, Fitter
    p = Fitter(img, FitConfig()).start(n)
    with torch.no_grad():
        arrays = (p.pos, p.conics(), p.color)
        return tuple(np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in arrays)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(ROOT.parent / "shared/datasets/kodak/kodim05.png"))
    ap.add_argument("--gaussians", type=int, default=2359)
    ap.add_argument("--geometry", default=None)
    ap.add_argument("--base", default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", default=None)
    ap.add_argument("--megapixels", default=None)
    ap.add_argument("--waves", action="store_true",
                    help="also the fused step with waves (fit_waves0, fit_waves)")
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
    if a.megapixels:
        rows = sizes_run(ext, base, image, a)
        write(a.json or str(ROOT / "benchmarks/results/bench_fit_step_sizes.json"), argv, {
            "image": image.name, "base": a.base, "density": DENSITY, "repeat": a.repeat,
            "isa": ext.isa(), "fit_isa": ext.fit_isa(), "rows": rows})
        return 0
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
        best, cpu = measure(arms(ext, base, m, q, c, target, nt, a.waves), a.repeat)
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
    write(a.json or str(ROOT / "benchmarks/results/bench_fit_step.json"), argv, {
        "image": image.name, "geometry": a.geometry, "base": a.base, "gaussians": len(m),
        "evaluations": evaluations, "ns_per_eval": "per forward+backward evaluation "
        "(a colour-solve step counted as one)", "cg_steps": CG_STEPS, "repeat": a.repeat,
        "waves": a.waves, "isa": ext.isa(), "fit_isa": ext.fit_isa(), "rows": rows})
    return 0


def write(path: str, argv, fields: dict) -> None:
    out = {"command": " ".join(["python", "benchmarks/bench_fit_step.py",
                                *(sys.argv[1:] if argv is None else argv)]),
           "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
                       "platform": platform.platform(), "load_average": list(os.getloadavg())},
           **fields, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
