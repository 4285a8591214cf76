#!/usr/bin/env bash
# One-shot check of the GPU path on a machine with torch, Triton, nvcc, numpy, Pillow, pytest
# and pybind11 but nothing of ours (this workplace's GPU machines: python3 only, no registry).
#
#   here:     bash benchmarks/gpu_wheels.sh           # the wheels it needs, into .whl/
#   there:    bash benchmarks/gpu_check.sh            # carry .whl with the working tree
#   test it:  CUDA_VISIBLE_DEVICES= bash benchmarks/gpu_check.sh --fake-device
#
# Results go to $GPU_CHECK_OUT (default benchmarks/results/gpu/): a log per step and
# summary.json, rewritten after every step (so a run cut short keeps what it did). Each step
# runs under its own time limit, all together under 8 minutes (480 s):
#   wheels 30 | kernel build 75 | environment 15 | GPU tests 120 | renderer benchmark 90 |
#   GPU encode 60 | CPU encode 45 | decode comparison 25        = 460 s
# A step that would end past 470 s is not started. --fake-device: no GPU here; every step up
# to the first that needs a GPU runs, the others are recorded as skipped. Without it and
# without a GPU the run stops after the environment step (exit status 2).
# Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_SITE
# (where the wheels are installed, default /tmp/gscodec-gpu-site).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${GPU_CHECK_OUT:-$ROOT/benchmarks/results/gpu}
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gscodec-gpu-site}
TOTAL=480
FAKE=0
[ "${1:-}" = "--fake-device" ] && FAKE=1
mkdir -p "$OUT" "$SITE"
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
T0=$(date +%s)
HAVE_GPU=0
HAVE_KERNEL=0
status=0

elapsed() { echo $(( $(date +%s) - T0 )); }

# record NAME STATUS SECONDS BUDGET NOTE: one entry of summary.json, written at once
record() {
    "$PY" - "$OUT/summary.json" "$@" <<'PY'
import json, os, sys
path, name, status, secs, budget, note = sys.argv[1:7]
try:
    s = json.load(open(path))
except (OSError, ValueError):
    s = {"steps": [], "budget_s": 480}
s["steps"] = [x for x in s["steps"] if x["step"] != name] + [
    {"step": name, "status": status, "seconds": int(secs), "budget_s": int(budget),
     "note": note}]
s["elapsed_s"] = sum(x["seconds"] for x in s["steps"])
tmp = path + ".tmp"
open(tmp, "w").write(json.dumps(s, indent=1) + "\n")
os.replace(tmp, path)
PY
}

# step NAME BUDGET NEEDS_GPU CMD...: run CMD under `timeout BUDGET`, log to OUT/NAME.log
step() {
    local name=$1 budget=$2 gpu=$3
    shift 3
    local t
    t=$(elapsed)
    if [ "$gpu" = 1 ] && [ "$HAVE_GPU" = 0 ]; then
        echo "== [$t s] $name: skipped (needs a GPU)"
        record "$name" skipped 0 "$budget" "needs a GPU"
        return 0
    fi
    if [ $(( t + budget )) -gt $(( TOTAL - 10 )) ]; then
        echo "== [$t s] $name: not started (would end past $TOTAL s)"
        record "$name" skipped 0 "$budget" "over the time budget"
        status=1
        return 0
    fi
    echo "== [$t s] $name (limit $budget s)"
    local s0 rc
    s0=$(date +%s)
    timeout "$budget" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/$name.log"
    local st=ok
    [ $rc -eq 124 ] && st=timeout
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && st=failed
    [ "$st" = ok ] || status=1
    record "$name" "$st" $(( $(date +%s) - s0 )) "$budget" "exit status $rc"
    return $rc
}

install_wheels() {
    # one wheel at a time (a bad one does not stop the others), then an import check of
    # every module gpu_wheels.sh lists
    local ok=0 bad=0 w mod req
    for w in "$WHEELS"/*.whl; do
        [ -e "$w" ] || { echo "no wheels in $WHEELS"; break; }
        if timeout 60 "$PY" -m pip install --quiet --no-index --no-deps --no-compile \
                --no-cache-dir --upgrade --target "$SITE" "$w"; then
            echo "installed $(basename "$w")"; ok=$((ok + 1))
        else
            echo "FAILED to install $(basename "$w")"; bad=$((bad + 1))
        fi
    done
    while read -r mod req; do
        if "$PY" -c "import $mod" 2>/dev/null; then
            echo "import $mod: ok"
        else
            echo "import $mod: FAILED (wheel for $req missing or broken)"; bad=$((bad + 1))
        fi
    done < <(bash benchmarks/gpu_wheels.sh --list)
    echo "$ok installed, $bad problems"
    [ "$bad" -eq 0 ]
}

build_kernel() {
    # gscodec._raster in place; setup.py only warns when the build fails, so load it after
    "$PY" setup.py build_ext --inplace || return 1
    "$PY" - <<'PY'
import importlib.util, sysconfig
path = "gscodec/_raster" + sysconfig.get_config_var("EXT_SUFFIX")
spec = importlib.util.spec_from_file_location("gscodec._raster", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print("compiled CPU kernel:", path, "isa", mod.isa(), "threads", mod.get_num_threads())
PY
}

environment() {
    "$PY" - "$OUT/env.json" <<'PY'
import json, platform, sys
info = {"python": platform.python_version(), "machine": platform.machine()}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda,
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as exc:  # noqa: BLE001
    info["torch"] = f"unavailable: {exc}"
for mod in ("triton", "numpy", "PIL", "pytest", "pybind11", "constriction", "gsplat"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        info[mod] = f"unavailable: {type(exc).__name__}: {exc}"
open(sys.argv[1], "w").write(json.dumps(info, indent=1) + "\n")
print(json.dumps(info, indent=1))
PY
}

encode() {  # encode DEVICE: kodim23 at fast effort, wall time and the CLI's JSON
    local dev=$1 t1 t2
    t1=$(date +%s.%N)
    "$PY" -m gscodec.cli encode tests/data/kodim23.png -o "$OUT/kodim23_$dev.gsi" \
        --device "$dev" --effort fast --json > "$OUT/encode_$dev.out" || return 1
    t2=$(date +%s.%N)
    "$PY" - "$OUT/encode_$dev.out" "$t1" "$t2" "$dev" "$OUT/encode_$dev.json" <<'PY'
import json, sys
src, t0, t1, dev, dst = sys.argv[1:6]
text = open(src).read()
try:
    res = json.loads(text)
except ValueError:
    res = {"stdout": text[-4000:]}
out = {"device": dev, "wall_s": round(float(t1) - float(t0), 2), "encode": res}
open(dst, "w").write(json.dumps(out, indent=1) + "\n")
print(json.dumps(out)[:1500])
PY
}

decode_compare() {
    "$PY" - "$OUT" <<'PY'
import json, pathlib, sys, time
import numpy as np
import gscodec
out = pathlib.Path(sys.argv[1])
res = {}
for f in sorted(out.glob("kodim23_*.gsi")):
    r = {}
    for dev in ("cpu", "cuda"):
        gscodec.decode(f, device=dev)
        t0 = time.perf_counter()
        r[dev] = gscodec.decode(f, device=dev)
        r[dev + "_s"] = round(time.perf_counter() - t0, 4)
    res[f.name] = {"identical": bool(np.array_equal(r["cpu"], r["cuda"])),
                   "cpu_s": r["cpu_s"], "cuda_s": r["cuda_s"]}
(out / "decode_compare.json").write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps(res))
sys.exit(0 if res and all(v["identical"] for v in res.values()) else 1)
PY
}

export ROOT OUT PY WHEELS SITE
export -f record install_wheels build_kernel environment encode decode_compare
rm -f "$OUT/summary.json"
step wheels 30 0 install_wheels
step kernel_build 75 0 build_kernel && HAVE_KERNEL=1
step environment 15 0 environment
HAVE_GPU=$("$PY" -c 'import json, sys; print(1 if json.load(open(sys.argv[1])).get("gpu") else 0)' \
    "$OUT/env.json" 2>/dev/null || echo 0)
if [ "$HAVE_GPU" = 0 ] && [ "$FAKE" = 0 ]; then
    echo "gpu_check: no usable GPU (see $OUT/environment.log); stopping"
    exit 2
fi
[ "$HAVE_GPU" = 0 ] && echo "gpu_check: no GPU; --fake-device: the steps that need one are skipped"
tests=(tests/test_cuda_backend.py tests/test_render_spec.py)
deselect=()
# Without the compiled kernel the CPU side of the comparisons is numpy: minutes at 16384^2.
[ "$HAVE_KERNEL" = 1 ] || deselect=(-k "not 16384")
step gpu_tests 120 1 env GSCODEC_TEST_CUDA=1 "$PY" -m pytest -q -p no:cacheprovider \
    "${tests[@]}" "${deselect[@]}" --junitxml="$OUT/gpu_tests.xml"
step renderer_benchmark 90 1 "$PY" benchmarks/bench_gpu_raster.py --graphs \
    --json "$OUT/bench_gpu_raster.json"
step gpu_encode 60 1 encode cuda
step cpu_encode 45 1 encode cpu          # the GPU encode's comparison: only with a GPU
if [ "$HAVE_KERNEL" = 1 ]; then
    step decode_compare 25 1 decode_compare
else
    record decode_compare skipped 0 25 "no compiled CPU kernel"
fi
echo "== [$(elapsed) s] done (status $status); results in $OUT"
exit $status
