"""benchmarks/gpu_check.sh end to end on this machine, up to the first step that needs a
GPU (CUDA_VISIBLE_DEVICES= and --fake-device): wheels one at a time with an import check,
the compiled kernel built and loaded, the environment, and a summary rewritten after every
step in the folder given by GPU_CHECK_OUT."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding the package `name`."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 1\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL",
                   "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and timeout")
def test_gpu_check_runs_up_to_the_gpu(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "gpucheck_fake")
    (wheels / "broken-0.1-py3-none-any.whl").write_bytes(b"not a zip file")
    out, site = tmp_path / "out", tmp_path / "site"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable,
               GPU_CHECK_OUT=str(out), GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_SITE=str(site))
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--fake-device"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["wheels", "kernel_build", "environment", "gpu_tests",
                           "renderer_benchmark", "gpu_encode", "cpu_encode", "decode_compare"]
    # the broken wheel fails its step and the run's status, the good one is installed
    assert steps["wheels"]["status"] == "failed" and r.returncode == 1, r.stdout[-3000:]
    assert (site / "gpucheck_fake" / "__init__.py").exists()
    log = (out / "wheels.log").read_text()
    assert "FAILED to install broken" in log and "import constriction: ok" in log
    if steps["kernel_build"]["status"] == "ok":
        assert "compiled CPU kernel:" in (out / "kernel_build.log").read_text()
    assert steps["environment"]["status"] == "ok"
    assert json.loads((out / "env.json").read_text())["gpu"] is None
    for name in ("gpu_tests", "renderer_benchmark", "gpu_encode", "cpu_encode",
                 "decode_compare"):
        assert steps[name]["status"] == "skipped", name
    assert sum(s["budget_s"] for s in summary["steps"]) <= summary["budget_s"] - 10


def test_gpu_wheels_lists_what_gpu_check_imports():
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_wheels.sh"), "--list"],
                       capture_output=True, text=True, check=True)
    lines = [line.split() for line in r.stdout.splitlines()]
    assert ["constriction", "constriction==0.5.0"] in lines
    assert all(len(x) == 2 for x in lines)
