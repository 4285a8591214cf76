"""Compiled multi-threaded CPU backend (csrc/raster_cpu.cpp), built on first use.

The extension is compiled with torch.utils.cpp_extension.load into a per-user cache
(~/.cache/gscodec/torch_extensions/<torch version>/<machine tag>, or under
$GSCODEC_CACHE_DIR / $XDG_CACHE_HOME); the machine tag keeps -march=native builds from
being shared between different CPUs. If the build fails, `available()` is False and
`unavailable_reason()` says why; nothing is raised until `render_cpu` is called.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import io
import os
import platform
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

EXTENSION_NAME = "gscodec_raster_cpu"
_lock = threading.Lock()
_module = None
_error: str | None = None
_tried = False


def _cache_root() -> Path:
    base = os.environ.get("GSCODEC_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gscodec"


def _machine_tag() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    flags += line
    except OSError:
        pass
    digest = hashlib.sha1((platform.machine() + flags).encode()).hexdigest()[:10]
    return f"{platform.machine() or 'unknown'}-{digest}"


def build_directory() -> Path:
    torch_ver = torch.__version__.replace("+", "_")
    return _cache_root() / "torch_extensions" / torch_ver / _machine_tag()


def _source():
    """The kernel source: package data gscodec.csrc when installed, else <repo>/csrc."""
    try:
        src = importlib.resources.files("gscodec.csrc").joinpath("raster_cpu.cpp")
        if src.is_file():
            return src
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return Path(__file__).resolve().parents[2] / "csrc" / "raster_cpu.cpp"


def _build():
    from torch.utils.cpp_extension import load

    src = _source()
    with importlib.resources.as_file(src) as path:
        build_dir = build_directory()
        build_dir.mkdir(parents=True, exist_ok=True)
        flags = ["-O3", "-ffp-contract=off", "-fopenmp-simd", "-std=c++17"]
        if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
            flags.append("-march=native")
        log = io.StringIO()
        try:
            with redirect_stdout(log), redirect_stderr(log):
                return load(name=EXTENSION_NAME, sources=[str(path)], extra_cflags=flags,
                            build_directory=str(build_dir), verbose=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            tail = log.getvalue()[-2000:]
            raise RuntimeError(f"{type(exc).__name__}: {exc}\n{tail}".strip()) from exc


def load_extension():
    """Build (once per process, cached on disk) and return the extension module, or None."""
    global _module, _error, _tried
    if _tried:
        return _module
    with _lock:
        if not _tried:
            try:
                _module = _build()
            except Exception as exc:  # noqa: BLE001
                _module, _error = None, f"could not build the CPU raster kernel: {exc}"
            _tried = True
    return _module


def available() -> bool:
    return load_extension() is not None


def unavailable_reason() -> str | None:
    load_extension()
    return _error


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, height, width):
        ext = load_extension()
        m = means.detach().to(torch.float32).contiguous()
        q = conics.detach().to(torch.float32).contiguous()
        c = colors.detach().to(torch.float32).contiguous()
        ctx.save_for_backward(m, q, c)
        ctx.dtypes = (means.dtype, conics.dtype, colors.dtype)
        return ext.forward(m, q, c, int(height), int(width))

    @staticmethod
    def backward(ctx, grad_out):
        m, q, c = ctx.saved_tensors
        ext = load_extension()
        gm, gq, gc = ext.backward(m, q, c, grad_out.to(torch.float32).contiguous())
        dm, dq, dc = ctx.dtypes
        return (gm.to(dm) if ctx.needs_input_grad[0] else None,
                gq.to(dq) if ctx.needs_input_grad[1] else None,
                gc.to(dc) if ctx.needs_input_grad[2] else None, None, None)


def render_cpu(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
               height: int, width: int) -> torch.Tensor:
    """Render with the compiled kernel: [height, width, C] float32, differentiable."""
    if load_extension() is None:
        raise RuntimeError(_error or "CPU raster kernel unavailable")
    for name, t in (("means", means), ("conics", conics), ("colors", colors)):
        if t.device.type != "cpu":
            raise ValueError(f"render backend 'cpu' needs CPU tensors, {name} is on {t.device}")
    if means.dim() != 2 or means.shape[1] != 2 or conics.shape != (means.shape[0], 3) \
            or colors.dim() != 2 or colors.shape[0] != means.shape[0] \
            or not 1 <= colors.shape[1] <= 4:
        raise ValueError(f"bad shapes: means {tuple(means.shape)}, conics "
                         f"{tuple(conics.shape)}, colors {tuple(colors.shape)} (C must be 1..4)")
    return _RasterizeCPU.apply(means, conics, colors, int(height), int(width))
