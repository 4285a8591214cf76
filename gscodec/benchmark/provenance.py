"""Provenance of a benchmark run: where the repository and the datasets are, the git
state, the command that reproduces the run, the machine, the encoder's settings; and the
dataset's images."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def default_dataset() -> Path | None:
    for base in (REPO_ROOT, Path.cwd()):
        d = base.parent / "shared" / "datasets" / "kodak"
        if d.is_dir():
            return d
    return None

def default_anchors_dir() -> Path | None:
    for base in (REPO_ROOT, Path.cwd()):
        d = base.parent / "shared" / "anchors" / "kodak"
        if d.is_dir():
            return d
    return None

def list_images(folder: Path, limit=None) -> list[Path]:
    imgs = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if limit is not None:
        imgs = imgs[: max(0, int(limit))]
    return imgs

def is_kodak(folder: Path, images: list[Path]) -> bool:
    return Path(folder).name.lower() == "kodak" or (
        bool(images) and all(p.name.lower().startswith("kodim") for p in images))

def dataset_name(folder: Path) -> str:
    """The dataset's name for results and stamps: its folder's name (``kodak``), never a path."""
    return Path(folder).resolve().name

def default_out(name: str) -> Path:
    if RESULTS_DIR.is_dir():
        return RESULTS_DIR / name
    return Path("results") / name

def git_state() -> dict:
    """The commit of the repository the benchmark runs from, and whether tracked files differ
    (outside benchmarks/results/, which the benchmark itself writes)."""
    def git(*a):
        r = subprocess.run(["git", "-C", str(REPO_ROOT), *a], capture_output=True, text=True,
                           timeout=20)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": None if dirty is None else bool(dirty)}

def rel_path(token: str) -> str:
    """A path argument written relative to the repository root (absolute paths never land in
    the results); other arguments unchanged."""
    if token.startswith("-") and "=" in token:
        opt, val = token.split("=", 1)
        return f"{opt}={rel_path(val)}"
    if token.startswith("-") or not token:
        return token
    p = Path(token)
    if not (p.is_absolute() or p.exists()):
        return token
    try:
        return os.path.relpath(p.resolve(), REPO_ROOT)
    except ValueError:  # another drive (Windows)
        return p.name

def command_line(args, dataset: Path, out: Path) -> str:
    """The ``gsi bench`` command that reproduces this run, rebuilt from the parsed options, with
    paths relative to the repository root (run it from there)."""
    cmd = ["gsi", "bench", rel_path(str(dataset)), "--codecs", args.codecs]
    if args.points:
        cmd += ["--points", ",".join(str(x) for x in args.points)]
    if getattr(args, "effort", "default") != "default":
        cmd += ["--effort", args.effort]
    for opt in ("iterations", "images"):
        if getattr(args, opt) is not None:
            cmd += [f"--{opt}", str(getattr(args, opt))]
    for q in args.quality or []:
        cmd += ["--quality", q]
    if args.device != "auto":
        cmd += ["--device", args.device]
    if args.seed != 0:
        cmd += ["--seed", str(args.seed)]
    if args.name:
        cmd += ["--name", args.name]
    cmd += ["--out", rel_path(str(out))]
    if args.jobs is not None:
        cmd += ["--jobs", str(args.jobs)]
    if args.ray is not None:
        cmd += ["--ray" if not args.ray else f"--ray={args.ray}"]
    if args.anchors:
        cmd.append("--anchors")
    if args.anchors_dir:
        cmd += ["--anchors-dir", rel_path(args.anchors_dir)]
    return shlex.join(cmd)

def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import PIL
        from PIL import features
        info["pillow"] = PIL.__version__
        for feat in ("jpg", "webp", "jpg_2000", "avif"):
            try:
                info[f"lib_{feat}"] = features.version(feat)
            except Exception:
                pass
    except ImportError:
        pass
    for mod in ("torch", "numpy", "pillow_jxl", "pytorch_msssim", "bjontegaard", "gscodec"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except Exception:
            info[mod] = None
    try:
        from importlib.metadata import version
        info["pillow_jxl"] = version("pillow-jxl-plugin")
    except Exception:
        pass
    try:   # the HEIC peers: pillow-heif, its libheif and x265
        import pillow_heif
        info["pillow_heif"] = pillow_heif.__version__
        info["lib_heif"] = pillow_heif.libheif_version()
        info["lib_heif_hevc_encoder"] = pillow_heif.libheif_info().get("HEIF")
    except Exception:
        pass
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    return info

def iterations_meta(effort: str, iterations) -> dict:
    """`iterations` (the explicit count, or the effort preset's base count) and
    `effort_preset` (the FitConfig fields the preset set, None with an explicit count: the
    default's count grows with the density, which `iterations` alone hides)."""
    if iterations is not None:
        return dict(iterations=int(iterations), effort_preset=None)
    try:
        from ..encoder.config import EFFORT_PRESETS
    except Exception:  # pragma: no cover - gscodec without fit presets
        return dict(iterations=None, effort_preset=None)
    preset = dict(EFFORT_PRESETS.get(effort, {}))
    return dict(iterations=preset.get("iterations"), effort_preset=preset or None)
