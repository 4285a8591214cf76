#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on a GPU machine that has torch, Triton, nvcc,
# numpy, Pillow, pytest and pybind11 but nothing of ours (this workplace's GPU machines:
# Python 3.12, no registry). Run here, where pip reaches a registry:
#
#   bash benchmarks/gpu_wheels.sh            # download them into .whl/ (carried with the run)
#   bash benchmarks/gpu_wheels.sh --list     # print "import-name requirement" lines, nothing else
#   bash benchmarks/gpu_wheels.sh --bare     # also numpy, Pillow, pytest (+ deps), pybind11, tqdm
#
# Options: --dest DIR (default .whl), --python-version X.Y (default 3.12). gpu_check.sh installs
# each wheel of DIR on its own and then checks that each module of --list imports.
# gsplat is not in the list: its PyPI wheel compiles CUDA code on first use (minutes); put a
# wheel with a prebuilt extension into DIR by hand to benchmark against it.
set -euo pipefail
cd "$(dirname "$0")/.."

# import name, requirement (the version the tests use here)
NEEDED=("constriction constriction==0.5.0")
BARE=("numpy numpy" "PIL pillow" "pytest pytest" "pybind11 pybind11" "tqdm tqdm")

dest=.whl
pyver=3.12
list=0
bare=0
while [ $# -gt 0 ]; do
    case "$1" in
        --list) list=1 ;;
        --bare) bare=1 ;;
        --dest) dest=$2; shift ;;
        --python-version) pyver=$2; shift ;;
        *) echo "gpu_wheels.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

wanted=("${NEEDED[@]}")
[ "$bare" -eq 1 ] && wanted+=("${BARE[@]}")
if [ "$list" -eq 1 ]; then
    printf '%s\n' "${wanted[@]}"
    exit 0
fi

mkdir -p "$dest"
git check-ignore -q "$dest" 2>/dev/null || echo "gpu_wheels.sh: note: $dest is not git-ignored" >&2
PY=${PYTHON:-python3}
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
reqs=()
for w in "${wanted[@]}"; do reqs+=("${w#* }"); done
# One download per requirement (a missing one does not hide the others); --bare resolves
# dependencies (pytest's), the default list has none.
status=0
for r in "${reqs[@]}"; do
    deps=(--no-deps)
    [ "$bare" -eq 1 ] && deps=()
    if ! "$PY" -m pip download --quiet "${deps[@]}" --only-binary=:all: --python-version "$pyver" \
            --implementation cp "${plat[@]}" -d "$dest" "$r"; then
        echo "gpu_wheels.sh: no wheel for $r (Python $pyver, manylinux x86-64)" >&2
        status=1
    fi
done
ls -l "$dest"
exit $status
