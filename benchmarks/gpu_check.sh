#!/usr/bin/env bash
# One-shot check of the GPU path on a machine with torch, Triton and nvcc but nothing of ours.
# Run from the repository root:   bash benchmarks/gpu_check.sh
# Extra wheels (constriction, gsplat, ...) are taken from ./.whl/ if present: on a machine with
# pip access, `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux_2_17_x86_64 -d .whl constriction==0.5.0` (and gsplat's wheel if any).
# Budget: about 8 minutes. Results go to benchmarks/results/gpu/.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/benchmarks/results/gpu
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/site "$ROOT"/.whl/*.whl \
        || echo "gpu_check: installing .whl/ wheels failed (continuing)"
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
unset TRITON_INTERPRET
status=0
# The compiled CPU kernel (for the CPU side of the comparisons): built in place, needs pybind11.
"$PY" setup.py build_ext --inplace > "$OUT/build_ext.log" 2>&1 \
    || echo "gpu_check: building the CPU kernel failed (the CPU side uses the numpy fallback)"
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp "environment"
"$PY" - <<'PY' | tee "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton unavailable:", e)
for mod in ("constriction", "gsplat"):
    try:
        m = __import__(mod); print(mod, getattr(m, "__version__", "?"))
    except Exception as e:
        print(mod, "unavailable:", type(e).__name__, e)
PY

stamp "GPU tests (GSCODEC_TEST_CUDA=1 pytest tests/test_cuda_backend.py)"
GSCODEC_TEST_CUDA=1 timeout 240 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_cuda_backend.py --junitxml="$OUT/test_cuda_backend.xml" 2>&1 \
    | tee "$OUT/test_cuda_backend.log" | tail -25
rc=${PIPESTATUS[0]}
echo "{\"pytest_returncode\": $rc}" > "$OUT/test_cuda_backend.json"
[ "$rc" -eq 0 ] || status=1

stamp "renderer benchmark"
timeout 200 "$PY" benchmarks/bench_gpu_raster.py --graphs --json "$OUT/bench_gpu_raster.json" \
    2>&1 | tee "$OUT/bench_gpu_raster.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

stamp "GPU encode of kodim23 (default effort; needs constriction from .whl/)"
if "$PY" -c "import gscodec" 2>/dev/null; then
    t_start=$(date +%s.%N)
    if timeout 150 "$PY" -m gscodec.cli encode tests/data/kodim23.png -o /tmp/k.gsi \
            --device cuda --json > "$OUT/encode_kodim23.out" 2> "$OUT/encode_kodim23.err"; then
        t_end=$(date +%s.%N)
        "$PY" - "$OUT/encode_kodim23.out" "$t_start" "$t_end" "$OUT/encode_kodim23.json" <<'PY'
import json, sys
src, t0, t1, dst = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(src).read()
try:
    res = json.loads(text)
except ValueError:
    res = {"stdout": text[-4000:]}
res = {"encode": res, "wall_s": round(t1 - t0, 2), "device": "cuda"}
open(dst, "w").write(json.dumps(res, indent=2) + "\n")
print(json.dumps(res)[:2000])
PY
        stamp "CPU encode of kodim23 (same options), and decodes of the GPU's file on both"
        timeout 150 "$PY" -m gscodec.cli encode tests/data/kodim23.png -o /tmp/k_cpu.gsi \
            --device cpu --json > "$OUT/encode_kodim23_cpu.json" 2> "$OUT/encode_kodim23_cpu.err" \
            || echo "gpu_check: CPU encode failed"
        "$PY" - "$OUT/decode_compare.json" <<'PY'
import json, sys, time
import numpy as np
import gscodec
res = {}
for f in ("/tmp/k.gsi", "/tmp/k_cpu.gsi"):
    try:
        out = {}
        for dev in ("cpu", "cuda"):
            gscodec.decode(f, device=dev)
            t0 = time.perf_counter(); a = gscodec.decode(f, device=dev)
            out[dev] = (a, time.perf_counter() - t0)
        res[f] = {"identical": bool(np.array_equal(out["cpu"][0], out["cuda"][0])),
                  "cpu_s": out["cpu"][1], "cuda_s": out["cuda"][1]}
    except Exception as e:
        res[f] = {"error": f"{type(e).__name__}: {e}"}
open(sys.argv[1], "w").write(json.dumps(res, indent=2) + "\n")
print(json.dumps(res))
PY
    else
        echo "gpu_check: GPU encode failed (continuing):"
        tail -5 "$OUT/encode_kodim23.err"
    fi
else
    echo "gpu_check: gscodec does not import (constriction missing?); skipping the encode"
fi

stamp "done (status $status); results in $OUT"
exit $status
