"""Compile every kernel of the Triton backend for real NVIDIA GPUs, without a GPU, and check
the machine code: the CI's guard for a backend that has no GPU to run on in CI.

    python -m gscodec.render.triton.aot [--arch 80,90] [--json OUT] [--triton 3.6.0]

For each kernel, each of its variants (the constexprs it is launched with: channels C = 1..4,
backward modes, exact chunk modes) and each target, `triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))` makes the PTX the GPU would run (pointer arguments
16-byte aligned, as torch allocates them; integer arguments unspecialised, as launched), and
the ptxas inside the Triton wheel reports registers and spills. It fails (exit status 1) on

* a compile error;
* an integer argument that Triton would specialise (missing from `do_not_specialize`);
* a register spill;
* in the exact kernels (spec section 10: bit-exact): a fused multiply-add, an approximate
  or flush-to-zero instruction, or float64 division and square root not correctly rounded.

Run it with TRITON_INTERPRET unset (the kernels must be jitted for compiling); it imports
triton and gscodec's kernels only, never torch. `--triton 3.6.0` checks with another Triton
(the GPU machines' version) than the one installed: its wheel is fetched once into a cache
folder and put first on the path of a subprocess.
"""
from __future__ import annotations

__all__ = ["check", "exact_problems", "main", "ptxas_report", "summary", "unspecialised_ints",
           "variants"]

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXACT = ("_fwd_exact_kernel", "_fast_exp_kernel")

# pointer arguments and their element types; every other non-constexpr argument is an
# integer ("i32") unless listed in FLOATS
POINTERS = {
    "means": "fp32", "conics": "fp32", "colors": "fp32", "out": "fp32", "grad": "fp32",
    "dm": "fp32", "dq": "fp32", "dc": "fp32", "part": "fp32", "bigpart": "fp32",
    "x": "fp32", "y": "fp32", "out_u8": "u8", "rect": "i32", "cnt": "i64", "cum": "i64",
    "keys": "i32", "vals": "i32", "perm": "i64", "pair_gid": "i32", "tile_start": "i32",
    "big_ids": "i32", "big_pos": "i32", "n_big": "i32", "rows": "fp64",
}
FLOATS = {"xs", "ys"}
# integer arguments that can exceed 2**31 - 1 (Triton then passes them as i64): also
# compiled so
WIDE = {"base", "cap"}

C_ALL = [{"C": c} for c in (1, 2, 3, 4)]


def variants() -> dict[str, list[dict]]:
    """Kernel name -> the constexpr values it is launched with (autograd.py, binning.py)."""
    from .kernels import BATCH, BATCH_BWD, BIN_BLOCK, SLOT_BLOCK, SPLIT
    return {
        "_rect_kernel": [{"BLOCK": BIN_BLOCK}],
        "_fill_kernel": [{"BLOCK": SLOT_BLOCK}],
        "_ranges_kernel": [{"BLOCK": SLOT_BLOCK, "BIG": big} for big in (True, False)],
        "_fwd_kernel": [{**c, "TILE_": 16, "BG": BATCH} for c in C_ALL],
        "_fwd_exact_kernel": [{**c, "TILE_": 16} for c in C_ALL],
        "_fast_exp_kernel": [{"BLOCK": 1024}],
        "_bwd_tile_kernel": [{**c, "TILE_": 16, "BG": BATCH_BWD, "MODE": mode}
                             for c in C_ALL for mode in (0, 1, 2)],
        "_bwd_big_kernel": [{**c, "TILE_": 16, "SPLIT": SPLIT, "MODE": mode}
                            for c in C_ALL for mode in (0, 1, 2)],
        "_reduce_kernel": [{**c, "SPLIT": SPLIT, "BLOCK": 128} for c in C_ALL],
    }


def _signature(fn, constexprs: dict, wide: bool):
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in POINTERS:
            sig[name] = "*" + POINTERS[name]
            attrs[(i,)] = [["tt.divisibility", 16]]        # torch's 16-byte alignment
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i64" if wide and name in WIDE else "i32"
    return sig, attrs


def unspecialised_ints(fn) -> list[str]:
    """Integer arguments of a jitted kernel that Triton would specialise (== 1, % 16)."""
    bad = []
    for p in fn.params:
        name = p.name
        if p.is_constexpr or name in POINTERS or name in FLOATS:
            continue
        if not p.do_not_specialize:
            bad.append(name)
    return bad


def _tool(name: str) -> str:
    import triton
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def ptxas_report(log: str) -> dict:
    """Registers and spill bytes from the log of Triton's own `ptxas -v` run."""
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    if regs is None:
        raise RuntimeError(f"no ptxas report in: {log.strip()[-500:]!r}")
    return {"registers": int(regs.group(1)),
            "spill_stores": int(spill.group(1)) if spill else 0,
            "spill_loads": int(spill.group(2)) if spill else 0,
            "stack_frame": int(stack.group(1)) if stack else 0}


def sass_fma(cubin: bytes) -> int:
    """Single-precision fused multiply-adds in the machine code (cuobjdump -sass), not
    counting the ones by zero (FFMA Rd, RZ, x, y: ptxas's way of moving y, no rounding of
    a product). Double-precision DFMA is the body of the correctly rounded div.rn.f64 and
    sqrt.rn.f64; a contracted one would show as fma in the PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        r = subprocess.run([_tool("cuobjdump"), "-sass", str(path)], capture_output=True,
                           text=True, check=True)
    ops = re.findall(r"\bFFMA(?:\.\w+)*\s+[^,]+,\s*(-?\|?\w+\|?),\s*(-?\|?\w+\|?),", r.stdout)
    return sum(1 for x, y in ops if "RZ" not in (x.strip("-|"), y.strip("-|")))


def exact_problems(ptx: str) -> list[str]:
    """What in the PTX of an exact kernel could change its bits."""
    body = "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith("//"))
    found = []
    if re.search(r"\bfma\.", body):
        found.append("fused multiply-add in the PTX")
    if re.search(r"\.approx\b", body):
        found.append("approximate instruction")
    if re.search(r"\.ftz\b", body):
        found.append("flush-to-zero")
    for op in re.findall(r"\b((?:div|sqrt|rcp)\.[a-z0-9.]*f64)", body):
        if ".rn." not in op + ".":
            found.append(f"{op} (not correctly rounded)")
    return sorted(set(found))


def compile_one(job) -> dict:
    """Compile one (kernel, constexprs, wide ints, arch): a row of the report."""
    import contextlib
    import io

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels
    name, constexprs, wide, arch = job
    fn = getattr(kernels, name)
    sig, attrs = _signature(fn, constexprs, wide)
    row = {"kernel": name, "arch": f"sm_{arch}", "triton": triton.__version__,
           "constexprs": constexprs, "wide_ints": wide}
    t0 = time.perf_counter()
    try:
        knobs.nvidia.dump_ptxas_log = True          # Triton prints its own ptxas -v log
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            k = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs),
                               target=GPUTarget("cuda", arch, 32),
                               options={"num_warps": kernels.NUM_WARPS,
                                        "enable_fp_fusion": False})
        row.update(ptxas_report(log.getvalue()))
        ptx = k.asm["ptx"]
        row["fma_ptx"] = len(re.findall(r"\bfma\.", ptx))
        row["fma_sass"] = sass_fma(k.asm["cubin"])
        row["problems"] = exact_problems(ptx) if name in EXACT else []
        if name in EXACT and row["fma_sass"]:
            row["problems"].append(f"{row['fma_sass']} fused multiply-adds in the SASS")
    except Exception as exc:  # noqa: BLE001 - reported as a failure
        row["error"] = f"{type(exc).__name__}: {str(exc)[:800]}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def jobs(archs, kernels_only=None) -> list[tuple]:
    """(kernel, constexprs, wide ints, arch) of every compile."""
    from . import kernels
    out = []
    for name, consts in variants().items():
        if kernels_only and name not in kernels_only:
            continue
        fn = getattr(kernels, name)
        free = set(fn.arg_names) - set().union(*consts) - set(POINTERS) - FLOATS
        for constexprs in consts:
            for wide in ((False, True) if free & WIDE else (False,)):
                out.extend((name, constexprs, wide, arch) for arch in archs)
    return out


def check(archs=(80, 90), workers: int | None = None,
          kernels_only=None) -> tuple[list[dict], list[str]]:
    """Compile everything (in `workers` processes, in a fresh Triton cache so that ptxas
    runs); return (one row per kernel variant and target, problems)."""
    import concurrent.futures
    import multiprocessing

    from . import kernels
    problems = []
    for name in variants():
        fn = getattr(kernels, name)
        if type(fn).__name__ == "InterpretedFunction":
            raise RuntimeError("TRITON_INTERPRET is set: the kernels are interpreted, not jitted")
        problems += [f"{name}: integer argument {arg!r} is specialised (add it to "
                     "do_not_specialize)" for arg in unspecialised_ints(fn)]
    todo = jobs(archs, kernels_only)
    workers = workers or min(len(todo), len(os.sched_getaffinity(0))
                             if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            rows = list(ex.map(compile_one, todo))
    for r in rows:
        where = f"{r['kernel']} {r['constexprs']} {r['arch']}"
        if "error" in r:
            problems.append(f"{where}: {r['error']}")
            continue
        if r["spill_stores"] or r["spill_loads"]:
            problems.append(f"{where}: spills {r['spill_stores']} / {r['spill_loads']} bytes "
                            "(stores / loads)")
        problems += [f"{where}: {p}" for p in r["problems"]]
    return rows, problems


def summary(rows: list[dict]) -> list[str]:
    """One line per kernel and target: registers over its variants, spills, FMA."""
    out = []
    for kernel, arch in sorted({(r["kernel"], r["arch"]) for r in rows}):
        rs = [r for r in rows if r["kernel"] == kernel and r["arch"] == arch and "error" not in r]
        if not rs:
            out.append(f"{kernel:18} {arch}: compile failed")
            continue
        regs = [r["registers"] for r in rs]
        spills = sum(r["spill_stores"] + r["spill_loads"] for r in rs)
        out.append(f"{kernel:18} {arch}: {len(rs):2} variants, registers {min(regs):3}-"
                   f"{max(regs):3}, spill bytes {spills}, FMA in SASS "
                   f"{sum(r['fma_sass'] for r in rs)}")
    return out


def other_triton(version: str, cache: Path) -> Path:
    """A folder holding Triton `version` for this Python, to put first on PYTHONPATH: the
    wheel from the package registry (`pip download --no-deps`), unpacked once into `cache`
    (the executables in it made executable again: zip files do not keep the mode)."""
    import zipfile
    site = cache / f"triton-{version}-py{sys.version_info[0]}{sys.version_info[1]}"
    if (site / "triton" / "__init__.py").exists():
        return site
    wheels = cache / "wheels"
    found = sorted(wheels.glob(f"triton-{version}-*.whl")) if wheels.exists() else []
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "-d", str(wheels), f"triton=={version}"],
                       check=True)
        found = sorted(wheels.glob(f"triton-{version}-*.whl"))
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
    with zipfile.ZipFile(found[-1]) as z:
        z.extractall(tmp)
    for exe in (tmp / "triton" / "backends" / "nvidia" / "bin").iterdir():
        exe.chmod(0o755)
    tmp.rename(site)
    return site


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="80,90")
    ap.add_argument("--kernels", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--workers", type=int, default=0, help="processes (default: CPUs)")
    ap.add_argument("--json", default=None, help="write every row here")
    ap.add_argument("--triton", default=None, metavar="VERSION",
                    help="check with this Triton instead of the installed one (fetched into "
                         "--cache once, run in a subprocess)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "gscodec-ci"))
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on"):
        print("aot: unset TRITON_INTERPRET (the kernels must be compiled)", file=sys.stderr)
        return 2
    if args.triton:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        site = other_triton(args.triton, cache)
        print(f"triton {args.triton} in {site} ({time.perf_counter() - t0:.0f} s to fetch "
              "and unpack)", flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = rest.index("--triton")
        del rest[i:i + 2]
        return subprocess.run([sys.executable, "-m", __spec__.name, *rest], env=env,
                              check=False).returncode
    import triton
    t0 = time.perf_counter()
    rows, problems = check(tuple(int(a) for a in args.arch.split(",")), args.workers or None,
                           [k for k in args.kernels.split(",") if k] or None)
    print(f"triton {triton.__version__} ({Path(triton.__file__).parent}): {len(rows)} "
          f"compiles in {time.perf_counter() - t0:.0f} s")
    for line in summary(rows):
        print(line)
    for p in problems:
        print("PROBLEM:", p)
    if args.json:
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "rows": rows,
                                               "problems": problems}, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
