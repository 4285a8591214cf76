"""Build of the compiled CPU raster kernel gscodec._raster (metadata lives in pyproject.toml).

The extension is optional: where no C++ compiler (or no pybind11) is available the install
still succeeds and gscodec decodes with its slow numpy fallback renderer.
"""
import re
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def q_cut() -> str:
    """Q_CUT from gscodec/render/common.py: the one place the constant is written."""
    text = (ROOT / "gscodec" / "render" / "common.py").read_text(encoding="utf-8")
    m = re.search(r"^Q_CUT\s*=\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*$", text, re.M)
    if not m:
        raise RuntimeError("setup.py: no 'Q_CUT = <number>' line in gscodec/render/common.py")
    return m.group(1)


# GCC/Clang. No -march=native: a built wheel may move to another x86-64 CPU; AVX2 code is
# chosen at run time instead. -ffp-contract=off: no FMA, so q is bit-identical to the
# reference (the fitting kernels ask for FMA explicitly, by intrinsics, where they may).
# -fopenmp-simd: honour '#pragma omp simd' (no OpenMP runtime is linked).
# -fno-trapping-math / -fno-math-errno only drop FP-exception and errno side effects (no
# value changes); without them GCC does not vectorize the branchy exp/cut-off loop.
UNIX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno",
              "-std=c++17", "-fopenmp-simd", "-fvisibility=hidden", "-g0"]
MSVC_FLAGS = ["/O2", "/fp:precise", "/std:c++17"]


SOURCES = ("bindings", "thread_pool", "isa", "geometry", "raster", "fit")
HEADERS = ("common.h", "thread_pool.h", "isa.h", "raster.h", "raster_kernels.h", "fit.h",
           "fit_simd.h", "fit_kernels.h")


class OptionalBuildExt(build_ext):
    """Compiler flags per compiler; any build failure only warns (the kernel is optional)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler at all
            self._warn(exc)

    def build_extension(self, ext):
        ext.extra_compile_args = MSVC_FLAGS if self.compiler.compiler_type == "msvc" \
            else UNIX_FLAGS
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(f"WARNING: gscodec: the compiled CPU kernel was not built ({exc}); "
              "decoding will use the slow numpy fallback", file=sys.stderr)


def extensions():
    try:
        import pybind11
    except ImportError:
        print("WARNING: gscodec: pybind11 missing, the compiled CPU kernel is not built",
              file=sys.stderr)
        return []
    return [Extension(
        "gscodec._raster",
        # One stage a file (csrc/common.h lists them).
        sources=[f"csrc/{name}.cpp" for name in SOURCES],
        depends=[f"csrc/{name}" for name in HEADERS] + ["gscodec/render/common.py"],
        include_dirs=[pybind11.get_include()],
        define_macros=[("GSI_Q_CUT", q_cut())],
        language="c++",
        optional=True,
    )]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
