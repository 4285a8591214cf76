"""Where the time of one encode goes: each stage of the pipeline, and the kernel's speed.

    python benchmarks/profile_encode.py IMAGE [--effort default] [--threads 2]
                                              [--label after] [--json OUT] [--mask MASK.png]

Runs one `gscodec.encode` of IMAGE with timers wrapped around the encoder's pieces from
outside (`Pipeline.run_stage` for each stage, and inside the stages the gradients, the
closed-form chain rule, autograd, the optimiser, the colour solves, the refinements, the
kernel calls of the torch backend), so that it profiles the encoder without changes to it.
Times are inclusive per call path ("fit > colour solves > kernel forward"); "(self)" is what
a path spent outside the paths timed inside it (Python and torch glue). Prints a table and
the fit's summary (kernel / optimiser / colour solves / refinements / gradients' chain rule
and autograd / glue) and writes JSON (default
benchmarks/results/profile_encode_<image>_<label>.json).

The kernel rows count Gaussian-pixel evaluations (the plans' `evaluations`) and give ns per
evaluation of the fused fitting step (render, loss and gradients, with its plan's set-up)
beside the roofline: a forward+backward evaluation needs about 50 float operations; an AVX2
core retires 16 per cycle without FMA, 32 with it (two 8-lane FMA units), at the clock
/proc/cpuinfo reports. The "before" files of the starting code (profile_encode_*_before.json)
were written by this script's first version (a176844), which wrapped the old `Fitter`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# As `import gscodec` does, before torch is imported (here by the script, first): with
# torch's idle threads spinning, its small operations took 10-30 ms each on the loaded VM,
# and the encode as the command runs it looks other than it is (Fitting, 2026-12-06).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FLOPS_PER_EVAL = 50          # forward + backward, one Gaussian-pixel evaluation (issue 30)
ROOT = Path(__file__).resolve().parents[1]


class Profiler:
    """Inclusive time per call path: a stack of stage names, one timer per path."""

    def __init__(self):
        self.stack: list[str] = []
        self.time: dict[tuple, float] = {}
        self.cpu: dict[tuple, float] = {}
        self.calls: dict[tuple, int] = {}
        self.evals: dict[tuple, int] = {}

    @contextmanager
    def stage(self, name: str, evaluations: int = 0):
        self.stack.append(name)
        path = tuple(self.stack)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            self.stack.pop()
            self.time[path] = self.time.get(path, 0.0) + dt
            self.cpu[path] = self.cpu.get(path, 0.0) + dc
            self.calls[path] = self.calls.get(path, 0) + 1
            self.evals[path] = self.evals.get(path, 0) + evaluations

    def wrap(self, owner, attr: str, name):
        """Time owner.attr under `name` (a string, or a function of the call's arguments);
        nothing where owner has no attr (an older checkout)."""
        fn = getattr(owner, attr, None)
        if fn is None:
            return

        def timed(*args, **kw):
            with self.stage(name(*args, **kw) if callable(name) else name):
                return fn(*args, **kw)

        timed.__wrapped__ = fn
        setattr(owner, attr, timed)

    def rows(self):
        """(path, seconds, self seconds, CPU seconds, calls, evaluations), sorted by path."""
        out = []
        for path, t in self.time.items():
            inner = sum(v for p, v in self.time.items()
                        if len(p) == len(path) + 1 and p[:len(path)] == path)
            out.append((path, t, t - inner, self.cpu[path], self.calls[path],
                        self.evals[path]))
        return sorted(out, key=lambda r: r[0])


class TimedPlan:
    """A kernel plan whose passes are timed as "kernel" stages with their evaluations."""

    def __init__(self, prof: Profiler, plan):
        self._prof, self._plan = prof, plan

    def __getattr__(self, name):
        attr = getattr(self._plan, name)
        if not callable(attr):
            return attr

        def timed(*args, **kw):
            with self._prof.stage(f"kernel {name}", self._plan.evaluations):
                return attr(*args, **kw)
        return timed


class TimedKernel:
    """The compiled module as the torch backend sees it, each call timed."""

    def __init__(self, prof: Profiler, ext):
        self._prof, self._ext = prof, ext

    def __getattr__(self, name):
        attr = getattr(self._ext, name)
        if name in ("Plan", "FitPlan", "fit_plan_flat"):
            def make(*args, **kw):
                label = "FitPlan" if name == "fit_plan_flat" else name
                with self._prof.stage(f"kernel {label} set-up"):
                    plan = attr(*args, **kw)
                return TimedPlan(self._prof, plan)
            return make
        if name == "flat_gradients":
            def chain(*args, **kw):
                with self._prof.stage("closed-form chain"):
                    return attr(*args, **kw)
            return chain
        if name in ("forward", "backward"):
            def timed(*args, **kw):
                with self._prof.stage(f"kernel {name} (one-pass)"):
                    return attr(*args, **kw)
            return timed
        return attr


class TimedKernelModule:
    """Stands in for kernel_torch's `extension` module: kernel() gives the timed module."""

    def __init__(self, prof: Profiler, module):
        self._prof, self._module = prof, module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def kernel(self):
        ext = self._module.kernel()
        return None if ext is None else TimedKernel(self._prof, ext)


def instrument(prof: Profiler):
    """Wrap the encoder's pieces (where a module imported a function by name, the name in
    that module is wrapped)."""
    import torch

    from gscodec.bitstream import format as gsi_format
    from gscodec.encoder import adam, objective, pipeline, quantize, refine, stages, waves
    from gscodec.render import kernel_torch
    kernel_torch.extension = TimedKernelModule(prof, kernel_torch.extension)
    run_stage = pipeline.Pipeline.run_stage

    def timed_stage(stage, *args, **kw):
        with prof.stage(stage.name):
            return run_stage(stage, *args, **kw)
    pipeline.Pipeline.run_stage = staticmethod(timed_stage)
    prof.wrap(adam, "gradients", "gradients")
    for owner in (getattr(adam, "FlatAdam", None), adam.Adam):
        prof.wrap(owner, "step", "optimiser")
    prof.wrap(objective.Objective, "clamp", "optimiser")
    for name in ("conics_with_parts", "conic_gradients"):
        prof.wrap(objective, name, "closed-form chain")
    prof.wrap(torch.autograd, "grad", "autograd")
    prof.wrap(torch.Tensor, "backward", "autograd")
    modules = [objective, stages]
    try:
        from gscodec.encoder import masked
        modules.append(masked)
    except ImportError:
        pass
    for mod in modules:
        prof.wrap(mod, "solve_colors", "colour solves")
    prof.wrap(refine.Refinement, "before_step", "refinements")
    prof.wrap(refine.ColorResolves, "before_step", "colour re-solves")
    prof.wrap(waves.WaveSelection, "before_step", "wave selection")
    prof.wrap(objective.Objective, "drop", "drop excess")
    prof.wrap(objective.Objective, "choose_quant", "choose steps")
    prof.wrap(objective.Objective, "assign_classes", "classes")
    for mod in (adam, stages):
        prof.wrap(mod, "fake_quantize", "fake quantize")
    prof.wrap(quantize, "canonicalize", "canonicalize")
    prof.wrap(stages, "to_integers", "to integers")
    prof.wrap(gsi_format, "write", "writing")


def save_free_fit(path: str):
    """Save the Gaussians that the free fit ends with to `path` (npz)."""
    import numpy as np

    from gscodec.encoder import stages
    run = stages.FreeFit.run

    def saving(self, objective, state, bar):
        run(self, objective, state, bar)
        p = state.params
        arrays = {"means": p.pos, "conics": p.conics(), "colors": p.color}
        np.savez(path, **{k: v.detach().cpu().numpy().astype(np.float32)
                          for k, v in arrays.items()})

    stages.FreeFit.run = saving


def cpu_info() -> dict:
    info = {"cpu": platform.processor(), "mhz": None, "fma": False, "avx2": False}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and info["cpu"] in ("", platform.processor()):
                info["cpu"] = val.strip()
            elif key == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(val)
            elif key == "flags":
                flags = val.split()
                info["fma"], info["avx2"] = "fma" in flags, "avx2" in flags
    except OSError:
        pass
    return info


def psnr(a, b) -> float:
    import numpy as np
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--effort", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", default="run")
    ap.add_argument("--json", default=None)
    ap.add_argument("--mask", default=None, help="a masked encode (MASK.png: nonzero = missing)")
    ap.add_argument("--save-geometry", default=None, metavar="NPZ",
                    help="save the Gaussians after the free fit (means, conics, colors) for "
                         "bench_fit_step.py --geometry")
    a = ap.parse_args(argv)
    image = Path(a.image)
    for path in (image, Path(a.mask) if a.mask else image):
        if not path.is_file():
            print(f"error: no image at {path}", file=sys.stderr)
            return 1
    import numpy as np
    import torch
    from PIL import Image

    import gscodec
    from gscodec.render import kernel
    torch.set_num_threads(a.threads)
    if not kernel.kernel_available():
        print("error: the compiled kernel is not available", file=sys.stderr)
        return 1
    prof = Profiler()
    instrument(prof)
    if a.save_geometry:
        save_free_fit(a.save_geometry)
    t0 = time.perf_counter()
    with prof.stage("encode"):
        data = gscodec.encode(str(image), effort=a.effort, mask=a.mask)
    total = time.perf_counter() - t0
    pixels = np.asarray(Image.open(image).convert("RGB"))
    decoded = gscodec.decode(data)
    h, w = pixels.shape[:2]
    report(prof, a, image, total, len(data), h * w, psnr(decoded[..., :3], pixels))
    return 0


def _is_kernel(leaf: str) -> bool:
    return leaf.startswith("kernel ")


def kernel_figures(prof: Profiler):
    """ns per evaluation of the fused fitting step (the gradients' kernel calls: the plan's
    set-up and loss_backward, or forward and backward) and of all plan passes, over the
    whole encode."""
    step_t = step_e = pass_t = pass_e = setup_t = 0.0
    for path, t in prof.time.items():
        leaf = path[-1]
        if not _is_kernel(leaf):
            continue
        in_step = "gradients" in path and "colour solves" not in path
        if leaf.endswith("set-up"):
            setup_t += t
        elif "(one-pass)" not in leaf:
            pass_t += t
            pass_e += prof.evals[path]
        if in_step:
            step_t += t
            if leaf in ("kernel loss_backward", "kernel backward"):
                step_e += prof.evals[path]
    return {"fused_step_seconds": step_t, "fused_step_evaluations": int(step_e),
            "fused_step_ns_per_eval": 1e9 * step_t / step_e if step_e else None,
            "plan_pass_seconds": pass_t, "plan_pass_evaluations": int(pass_e),
            "plan_set_up_seconds": setup_t}


def stage_summary(prof: Profiler, stage: str = "fit") -> dict:
    """The stage's time (wall, CPU) split into the kernel of its gradients, the closed-form
    chain rule, autograd, the optimiser, the colour (re-)solves, the refinements and the
    rest (glue: Python and torch between them)."""
    top = ("encode", stage)
    if top not in prof.time:
        return {}
    out = {"total": [prof.time[top], prof.cpu[top]]}
    for path in prof.time:
        if len(path) <= len(top) or path[:len(top)] != top:
            continue
        sub = path[len(top)]
        if sub == "gradients":
            if len(path) == len(top) + 2:      # the gradients' parts
                leaf = path[-1]
                key = "kernel" if _is_kernel(leaf) else leaf
            else:
                continue
        elif len(path) == len(top) + 1:
            key = sub
        else:
            continue
        cur = out.setdefault(key, [0.0, 0.0])
        cur[0] += prof.time[path]
        cur[1] += prof.cpu[path]
    named = [k for k in out if k != "total"]
    out["glue"] = [out["total"][i] - sum(out[k][i] for k in named) for i in (0, 1)]
    return {k: {"seconds": round(v[0], 3), "cpu_seconds": round(v[1], 3)} for k, v in out.items()}


def report(prof, a, image, total, nbytes, npix, db):
    info = cpu_info()
    kf = kernel_figures(prof)
    ghz = (info["mhz"] or 0) / 1000.0
    roof = {}
    if ghz > 0:   # per evaluation at a.threads threads, each retiring 16 (32) float ops a cycle
        roof["no_fma_ns_per_eval"] = FLOPS_PER_EVAL / 16.0 / ghz / a.threads
        if info["fma"]:
            roof["fma_ns_per_eval"] = FLOPS_PER_EVAL / 32.0 / ghz / a.threads
    print(f"{image.name}: effort {a.effort}, {a.threads} threads, {total:.2f} s "
          f"({prof.cpu[('encode',)]:.2f} s CPU), "
          f"{nbytes} bytes ({8 * nbytes / npix:.4f} bpp), {db:.3f} dB")
    print(f"{'stage':<52} {'s':>8} {'self s':>8} {'cpu s':>8} {'calls':>6} {'%':>6}")
    rows = []
    for path, t, self_t, cpu, calls, evals in prof.rows():
        label = "  " * (len(path) - 1) + path[-1]
        print(f"{label:<52} {t:>8.3f} {self_t:>8.3f} {cpu:>8.3f} {calls:>6} "
              f"{100 * t / total:>6.1f}")
        rows.append({"path": list(path), "seconds": round(t, 4),
                     "self_seconds": round(self_t, 4), "cpu_seconds": round(cpu, 4),
                     "calls": calls, "evaluations": evals})
    summary = stage_summary(prof)
    if summary:
        fit_t = summary["total"]["seconds"]
        print("free fit: " + ", ".join(
            f"{k} {v['seconds']:.2f} s ({100 * v['seconds'] / fit_t:.0f} %, "
            f"{v['cpu_seconds']:.2f} s CPU)" for k, v in summary.items()))
    ns = kf["fused_step_ns_per_eval"]
    if ns:
        line = f"fused fitting step: {ns:.2f} ns per evaluation at {a.threads} threads"
        if roof:
            line += f"; roofline at {ghz:.2f} GHz, {a.threads} threads: " + ", ".join(
                f"{v:.2f} ns ({k.split('_ns')[0].replace('_', ' ')})" for k, v in roof.items())
        print(line)
    out = {"command": " ".join(["python", "benchmarks/profile_encode.py", *sys.argv[1:]]),
           "label": a.label, "code": os.environ.get("PYTHONPATH") or str(ROOT),
           "machine": {**info, "cpu_count": os.cpu_count(), "platform": platform.platform()},
           "image": image.name, "mask": a.mask, "effort": a.effort, "threads": a.threads,
           "seconds": round(total, 3), "cpu_seconds": round(prof.cpu[("encode",)], 3),
           "load_average": list(os.getloadavg()), "bytes": nbytes,
           "bpp": round(8 * nbytes / npix, 5),
           "psnr": round(db, 4), "kernel": kf, "roofline": roof, "free_fit": summary,
           "flops_per_eval": FLOPS_PER_EVAL,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": rows}
    path = Path(a.json) if a.json else \
        ROOT / "benchmarks/results" / f"profile_encode_{image.stem}_{a.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
