"""The compile check of the Triton kernels for real GPUs (gscodec.render.triton.aot), which
needs no GPU. CI runs the whole matrix (every kernel and variant, sm_80 and sm_90, with the
installed Triton and with Triton 3.6) as a step of its own (.ci/run); here: its checks on
known inputs, and one compile of the exact kernels with the installed Triton."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gscodec.render.triton import aot

ROOT = Path(__file__).resolve().parents[1]


def test_exact_problems_finds_what_changes_bits():
    clean = "\n".join(["mul.rn.f32 %r1, %r2, %r3;", "add.rn.f32 %r4, %r1, %r5;",
                       "div.rn.f64 %rd1, %rd2, %rd3;", "sqrt.rn.f64 %rd4, %rd1;",
                       "// fma.rn.f32 in a comment does not count"])
    assert aot.exact_problems(clean) == []
    assert aot.exact_problems(clean + "\nfma.rn.f32 %r6, %r1, %r2, %r3;") == [
        "fused multiply-add in the PTX"]
    assert aot.exact_problems("ex2.approx.f32 %r1, %r2;") == ["approximate instruction"]
    assert aot.exact_problems("cvt.rmi.ftz.f32.f32 %r1, %r2;") == ["flush-to-zero"]
    assert aot.exact_problems("sqrt.rp.f64 %rd1, %rd2;") == [
        "sqrt.rp.f64 (not correctly rounded)"]


def test_ptxas_report_parses_the_log():
    log = ("ptxas info    : Compiling entry function '_fwd_kernel' for 'sm_90a'\n"
           "ptxas info    : Function properties for _fwd_kernel\n"
           "    8 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : Used 168 registers, used 1 barriers, 412 bytes cmem[0]\n")
    assert aot.ptxas_report(log) == {"registers": 168, "spill_stores": 4, "spill_loads": 8,
                                     "stack_frame": 8}
    with pytest.raises(RuntimeError):
        aot.ptxas_report("nothing")


def test_every_launched_variant_is_in_the_matrix():
    """The matrix covers every kernel of kernels.py and each channel count."""
    import ast
    src = (ROOT / "gscodec" / "render" / "triton" / "kernels.py").read_text()
    launched = {node.name for node in ast.parse(src).body
                if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel")}
    matrix = aot.variants()
    assert set(matrix) == launched
    for name in ("_fwd_kernel", "_fwd_exact_kernel", "_bwd_tile_kernel", "_bwd_big_kernel",
                 "_reduce_kernel"):
        assert {v["C"] for v in matrix[name]} == {1, 2, 3, 4}, name


def test_exact_kernels_compile_for_sm90_without_fma(tmp_path):
    """The exact kernels compiled for sm_90 with the installed Triton: no spills, no FMA,
    nothing approximate, every integer argument unspecialised (a subprocess: in this one
    the kernels may be interpreted)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = tmp_path / "aot.json"
    r = subprocess.run([sys.executable, "-m", "gscodec.render.triton.aot", "--arch", "90",
                        "--kernels", "_fwd_exact_kernel,_fast_exp_kernel", "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and all(r["spill_stores"] == 0 and r["fma_sass"] == 0
                                  for r in rows)
