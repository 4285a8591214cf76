"""``gsi bench``: rate-distortion benchmark of gscodec against image-codec peers.

Entry points for the CLI: ``add_arguments(parser)`` and ``run(args) -> int``;
``main(argv)`` for a stand-alone call (benchmarks/rd.py).

Results go to one folder per dataset, in the layout of CompressAI's published results
(``--out``, default ``benchmarks/results/<dataset>/`` in the repository):
  <codec>.json   one file per codec configuration (gsi.json, gsi-gi.json, jpeg.json, webp.json,
                 jpeg2000.json, avif.json, jxl.json), overwritten in place: CompressAI's schema
                 {"name", "description", "meta", "results": {"psnr-rgb", "ms-ssim-rgb", "bpp",
                 "encoding_time", "decoding_time", <knob>}} plus "per_image" points; "meta"
                 stamps the git commit, the encoder fingerprint, effort/iterations and the
                 dataset name (relative, never an absolute path)
  bdrate.json    BD-rate (PSNR, MS-SSIM) of gsi against every other codec in the folder
                 measured on the same images, and against published anchors when given
  rd.png         RD plot, PSNR and MS-SSIM panels
  summary.txt    the printed tables and BD-rates
  cache.jsonl    one JSON line per (codec, image, rate point, settings + encoder fingerprint):
                 a re-run computes only what is missing (resume), whether with --jobs or --ray
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import bdrate as _bd
from .distortion import bpp as _bpp
from .distortion import load_rgb, ms_ssim, ms_ssim_note, psnr
from .peers import ALL_CODECS, GSI_CODECS, canonical, encoder_fingerprint, make_codec

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_NAME = "cache.jsonl"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
EFFORTS = ("fast", "default", "max")


BENCH_DESCRIPTION = ("Rate-distortion benchmark of gscodec against JPEG, WebP, JPEG 2000, AVIF and\n"
                     "JPEG XL (needs the [bench] extras; --ray needs [cluster]). Writes one folder\n"
                     "per dataset in the layout of CompressAI's published results.")


class BenchError(Exception):
    """A user error reported as one line, exit status 2."""
# Published anchors whose codec we also measure: measured vs published sanity check.
PUBLISHED_TWIN = {"jpeg": "jpeg", "webp": "webp", "jpeg2000": "jpeg2000"}


# --------------------------------------------------------------------------- arguments

def _floats(items):
    out = []
    for it in items:
        for s in str(it).split(","):
            s = s.strip()
            if s:
                out.append(float(s))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "outputs (in --out, default benchmarks/results/<dataset>/):\n"
        "  <codec>.json  CompressAI results schema + per-image points, stamped with the git\n"
        "                commit, encoder fingerprint, effort/iterations and dataset name\n"
        "  bdrate.json   BD-rate of gsi against the other codecs (and published anchors)\n"
        "  rd.png        RD plot (PSNR and MS-SSIM);  summary.txt  the printed tables\n"
        "  cache.jsonl   finished encodes: a re-run computes only what is missing\n"
        "\n"
        "examples:\n"
        "  gsi bench ../shared/datasets/kodak --jobs 2 --anchors\n"
        "  gsi bench ../shared/datasets/kodak --ray                  # local Ray, all CPUs\n"
        "  gsi bench ../shared/datasets/kodak --ray=ray://head:10001 # a Ray cluster (GPUs used)")
    p.add_argument("dataset", nargs="?", default=None,
                   help="folder of PNG images (default: ../shared/datasets/kodak beside the checkout)")
    p.add_argument("--points", nargs="+", default=None, metavar="DENSITY",
                   help="gsi rate points as Gaussian densities in Gaussians per 1000 pixels "
                        "(N = round(density*W*H/1000)); e.g. --points 2,4,8,16 (the default)")
    p.add_argument("--effort", choices=EFFORTS, default="default",
                   help="gsi encoder effort preset passed to gscodec.encode (default: default)")
    p.add_argument("--iterations", type=int, default=None,
                   help="gsi fitting iterations passed to gscodec.encode (default: set by --effort)")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated subset of {','.join(ALL_CODECS)} (default: all)")
    p.add_argument("--quality", action="append", default=[], metavar="CODEC=Q1,Q2,...",
                   help="override a peer's rate points (JPEG/WebP/AVIF/JXL quality; JPEG 2000 target "
                        "bpp); repeat for several peers")
    p.add_argument("--images", type=int, default=None, metavar="N", help="use only the first N images")
    p.add_argument("--device", default="auto",
                   help="device for gscodec (auto, cpu, cuda; default auto); --ray on a cluster "
                        "with GPUs encodes gsi on cuda")
    p.add_argument("--seed", type=int, default=0, help="seed passed to gscodec.encode (default 0)")
    p.add_argument("--name", default=None,
                   help="dataset name: the results folder and the 'dataset' stamp (default: the "
                        "dataset folder's name, e.g. kodak)")
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<name>/ in the repository, "
                        "else results/<name>/)")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="parallel worker processes (spawn), one torch thread each when > 1 "
                        "(default 1); with a local --ray, the number of CPUs Ray may use")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the encodes as Ray tasks (pip install 'gscodec[cluster]'): without "
                        "ADDRESS on a local Ray (num_cpus=--jobs, else all CPUs), with one "
                        "(--ray=ADDRESS, e.g. ray://head:10001 or auto) on that cluster; gsi tasks "
                        "ask for one GPU each where the cluster has GPUs (and encode on cuda), "
                        "the peers one CPU. Same cache and numbers "
                        "as --jobs; gscodec must be installed on the cluster's nodes")
    p.add_argument("--anchors", action="store_true",
                   help="draw published anchors (Kodak) dashed on the plot")
    p.add_argument("--anchors-dir", default=None,
                   help="folder of published results JSON, used for BD-rates and --anchors "
                        "(default: ../shared/anchors/kodak when the dataset is Kodak)")
    p.add_argument("--no-plot", action="store_true", help="skip rd.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# --------------------------------------------------------------------------- helpers

def _log(msg=""):
    print(msg, flush=True)


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


def _rel(token: str) -> str:
    """A path argument written relative to the repository root (absolute paths never land in
    the results); other arguments unchanged."""
    if token.startswith("-") and "=" in token:
        opt, val = token.split("=", 1)
        return f"{opt}={_rel(val)}"
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
    cmd = ["gsi", "bench", _rel(str(dataset)), "--codecs", args.codecs]
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
    cmd += ["--out", _rel(str(out))]
    if args.jobs is not None:
        cmd += ["--jobs", str(args.jobs)]
    if args.ray is not None:
        cmd += ["--ray" if not args.ray else f"--ray={args.ray}"]
    if args.anchors:
        cmd.append("--anchors")
    if args.anchors_dir:
        cmd += ["--anchors-dir", _rel(args.anchors_dir)]
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
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    return info


def jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.floating,)):
        return jsonable(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _num(v):
    """Back from JSON: None -> NaN, "inf" -> inf."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v)
    return float(v)


def unit_key(codec: str, image: Path, point, settings: dict) -> str:
    try:
        size = image.stat().st_size
    except OSError:
        size = None
    return json.dumps([codec, image.name, size, point, settings], sort_keys=True)


# --------------------------------------------------------------------------- worker

_CODECS: dict = {}


def _init_worker(jobs: int):
    if jobs > 1:
        _one_thread()


def _one_thread():
    """One torch/OpenMP thread per worker: parallel workers do not fight over the cores, and
    the gsi encode is deterministic for a fixed seed and thread count (so --jobs and --ray
    give the same numbers)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def _get_codec(spec):
    key = json.dumps(spec, sort_keys=True)
    if key not in _CODECS:
        name, opts = spec
        _CODECS[key] = make_codec(name, None, **opts)
    return _CODECS[key]


@functools.lru_cache(maxsize=1)
def _worker_fingerprint() -> str:
    return encoder_fingerprint()


_ROW_KEYS = ("key", "codec", "image", "point", "point_name", "settings")


def _read_rgb(task: dict, data: bytes | None):
    if data is not None:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return load_rgb(im)
    return load_rgb(task["path"])


def _measure(row: dict, codec, rgb, data: bytes, extra: dict, t_enc: float) -> None:
    """Decode ``data``, time it, and fill ``row`` with the sizes, quality and times."""
    h, w = rgb.shape[:2]
    t0 = time.perf_counter()
    rec = codec.decode(data)
    t_dec = time.perf_counter() - t0
    if rec.shape != rgb.shape:
        raise ValueError(f"decoded shape {rec.shape} != source {rgb.shape}")
    row.update({"width": w, "height": h, "bytes": len(data), "bpp": _bpp(len(data), h, w),
                "psnr": psnr(rgb, rec), "ms_ssim": ms_ssim(rgb, rec),
                "encoding_time": t_enc, "decoding_time": t_dec, **extra})
    if row["codec"] in GSI_CODECS:
        # The code that really ran (a Ray worker may import another copy of gscodec).
        row["worker_encoder"] = _worker_fingerprint()
    note = ms_ssim_note(h, w)
    if note:
        row["note"] = note


def _error(row: dict, e: Exception) -> None:
    import traceback
    row["error"] = f"{type(e).__name__}: {e}"
    row["traceback"] = traceback.format_exc(limit=6)


def run_unit(task: dict, data: bytes | None = None):
    """Encode one image at one point, decode the bytes, measure.  Never raises.  The image
    is read from ``task["path"]``, or from ``data`` (its file's bytes) when given.  A joint
    task (``task["joint"]``, see `joint_tasks`) returns a list of rows, one per codec."""
    if "joint" in task:
        return _run_joint(task, data)
    row = {k: task[k] for k in _ROW_KEYS}
    try:
        codec = _get_codec(task["spec"])
        rgb = _read_rgb(task, data)
        t0 = time.perf_counter()
        data, extra = codec.encode(rgb, task["point"])
        _measure(row, codec, rgb, data, extra, time.perf_counter() - t0)
    except Exception as e:  # reported by the runner, not cached
        _error(row, e)
    return row


def _run_joint(task: dict, data: bytes | None = None) -> list[dict]:
    """gsi codecs at one point from one free fit (`GSI.encode_profiles`): the same bytes
    as separate encodes; each row's encoding_time is the shared fit plus its own tail."""
    subs = task["joint"]
    rows = [{k: t[k] for k in _ROW_KEYS} for t in subs]
    try:
        codecs = [_get_codec(t["spec"]) for t in subs]
        rgb = _read_rgb(task, data)
        out = codecs[0].encode_profiles(rgb, task["point"], [c.profile for c in codecs])
        for row, codec in zip(rows, codecs, strict=True):
            data, extra, t_enc = out[codec.profile]
            _measure(row, codec, rgb, data, dict(extra, shared_fit=True), t_enc)
    except Exception as e:
        for row in rows:
            if "bytes" not in row:
                _error(row, e)
    return rows


def joint_tasks(tasks: list[dict]) -> list[dict]:
    """Merge the gsi codecs' tasks that differ only in profile (same image, point and fit
    options) into one task each: their free fit is computed once."""
    out, groups = [], {}
    for t in tasks:
        if t["codec"] in GSI_CODECS:
            s = {k: v for k, v in t["settings"].items() if k != "profile"}
            gk = json.dumps([t["path"], t["point"], s, t["spec"][1]], sort_keys=True)
            if gk in groups:
                groups[gk]["joint"].append(t)
                continue
            groups[gk] = {**t, "joint": [t]}
            out.append(groups[gk])
        else:
            out.append(t)
    return [t["joint"][0] if "joint" in t and len(t["joint"]) == 1 else t for t in out]


def _ray_unit(task: dict, data: bytes) -> dict:
    """A Ray task: one encode on one thread (on cuda when the task holds a GPU)."""
    _one_thread()
    return run_unit(task, data)


# --------------------------------------------------------------------------- Ray

def ray_init(address: str | None = None, num_cpus: int | None = None):
    """Connect to Ray: ``address`` given -> that cluster; else a local Ray with ``num_cpus``
    CPUs (None: all).  Reuses a Ray already initialised in this process.  Returns
    (ray module, whether this call started it).  Raises BenchError when Ray is missing."""
    try:
        import ray
    except ImportError:
        raise BenchError("--ray needs Ray: pip install 'gscodec[cluster]' (ray[default]>=2.9)") from None
    if ray.is_initialized():
        return ray, False
    import logging
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        # Workers import this very copy of gscodec (the checkout, not another install).
        pkg_parent = str(Path(__file__).resolve().parents[2])
        pp = os.pathsep.join([pkg_parent] + ([os.environ["PYTHONPATH"]]
                                             if os.environ.get("PYTHONPATH") else []))
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pp}}, **quiet)
    return ray, True


def _run_ray(ray, tasks: list[dict], take) -> None:
    """Submit every task, hand each finished row to ``take`` as it arrives."""
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0

    def on_gpu(t):
        name, opts = t["spec"]
        return dict(t, spec=(name, {**opts, "device": "cuda"}))

    unit = ray.remote(max_retries=1)(_ray_unit)
    refs: dict = {}
    pending = {}
    for t in tasks:
        if t["path"] not in refs:
            refs[t["path"]] = ray.put(Path(t["path"]).read_bytes())
        if t["codec"] in GSI_CODECS and has_gpu:
            t = on_gpu(t)
            if "joint" in t:
                t["joint"] = [on_gpu(x) for x in t["joint"]]
            fut = unit.options(num_cpus=1, num_gpus=1).remote(t, refs[t["path"]])
        else:
            fut = unit.options(num_cpus=1).remote(t, refs[t["path"]])
        pending[fut] = t
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for fut in done:
                t = pending.pop(fut)
                try:
                    row = ray.get(fut)
                except Exception as e:  # a worker that died, a task Ray could not run
                    why = f"Ray: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    row = [dict({k: x[k] for k in _ROW_KEYS}, error=why)
                           for x in t.get("joint", [t])]
                take(row)
    finally:
        for fut in pending:
            try:
                ray.cancel(fut, force=True)
            except Exception:
                pass


# --------------------------------------------------------------------------- cache

def read_cache(path: Path) -> dict:
    rows = {}
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run
            if "key" in r and "error" not in r:
                rows[r["key"]] = r
    return rows


def _append(fh, row):
    fh.write(json.dumps(jsonable(row)) + "\n")
    fh.flush()
    try:
        os.fsync(fh.fileno())
    except OSError:
        pass


# --------------------------------------------------------------------------- aggregation

def aggregate(codec, images: list[Path], rows_by_key: dict, settings: dict):
    """Mean over images for each point, only for points every image has; returns
    (results dict, per-image rows, notes)."""
    res = {"bpp": [], "psnr-rgb": [], "ms-ssim-rgb": [], "encoding_time": [], "decoding_time": [],
           codec.point_name: []}
    per_image, notes = [], []
    for p in codec.points:
        rows = []
        for img in images:
            r = rows_by_key.get(unit_key(codec.name, img, p, settings))
            if r is not None:
                rows.append(r)
        per_image.extend(rows)
        if len(rows) < len(images):
            notes.append(f"{codec.name} {codec.point_name}={p}: {len(images) - len(rows)} of "
                         f"{len(images)} images missing; point left out of the averages")
            continue
        if not rows:
            continue

        def mean(k, rows=rows):
            vals = [_num(r.get(k)) for r in rows]
            vals = [v for v in vals if not math.isnan(v)]
            return float(np.mean(vals)) if vals else math.nan

        res["bpp"].append(mean("bpp"))
        res["psnr-rgb"].append(mean("psnr"))
        ms = [_num(r.get("ms_ssim")) for r in rows]
        res["ms-ssim-rgb"].append(float(np.mean(ms)) if ms and not any(math.isnan(v) for v in ms)
                                  else math.nan)
        res["encoding_time"].append(mean("encoding_time"))
        res["decoding_time"].append(mean("decoding_time"))
        res[codec.point_name].append(p)
        if codec.name in GSI_CODECS:
            res.setdefault("gaussians_mean", []).append(mean("gaussians"))
    small = sorted({r["image"] for r in per_image if r.get("note")})
    if small:
        notes.append(f"MS-SSIM is NaN (image smaller than 161 px on a side): {', '.join(small)}")
    return res, per_image, notes


_ROW_INTERNAL = ("key", "settings", "point", "point_name", "codec", "image", "psnr", "ms_ssim",
                 "note", "worker_encoder", "traceback")


def per_image_point(row: dict) -> dict:
    """A cache row as a per-image point: the image, the codec's knob value and the
    CompressAI metric names, then the rest (bytes, size, times, Gaussian counts, ...)."""
    out = {"image": row["image"], row["point_name"]: row["point"], "bpp": row.get("bpp"),
           "psnr-rgb": row.get("psnr"), "ms-ssim-rgb": row.get("ms_ssim")}
    out.update({k: v for k, v in row.items() if k not in _ROW_INTERNAL and k not in out})
    return out


def results_json(codec, res, per_image, meta) -> dict:
    """CompressAI's results schema ({"name", "description", "meta", "results"}) with the
    codec's id and the per-image points added."""
    return jsonable({
        "name": codec.label,
        "description": codec.description + (f"; settings {codec.settings()}" if codec.settings() else ""),
        "codec": codec.name,
        "meta": meta,
        "results": res,
        "per_image": [per_image_point(r) for r in per_image],
    })


def load_folder_results(out: Path, images: list[str], skip: set) -> tuple[dict, list[str]]:
    """The other codecs' results already in the dataset folder (an earlier run of other
    codecs), kept only when measured on the same images.  Returns ({codec: doc}, notes)."""
    found, notes = {}, []
    for name in ALL_CODECS:
        f = Path(out) / f"{name}.json"
        if name in skip or not f.is_file():
            continue
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or "results" not in doc:
            continue
        if (doc.get("meta") or {}).get("images") != images:
            notes.append(f"{f.name} (earlier run) left out of the BD-rates and the plot: "
                         f"measured on other images")
            continue
        found[name] = doc
    return found, notes


def load_anchors(folder: Path | None) -> list[dict]:
    out = []
    if folder is None or not Path(folder).is_dir():
        return out
    for p in sorted(Path(folder).glob("*.json")):
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and "results" in d and "bpp" in d["results"]:
            d["_id"] = p.stem
            out.append(d)
    return out


# --------------------------------------------------------------------------- tables

def _f(v, fmt):
    v = _num(v) if v is not None else math.nan
    return "nan" if math.isnan(v) else format(v, fmt)


def format_codec_table(codec, res) -> str:
    pn = codec.point_name
    lines = [f"{codec.label} [{codec.name}]",
             f"  {pn:>10} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>8} {'dec s':>8}"
             + ("  Gaussians" if codec.name in GSI_CODECS else "")]
    for i in range(len(res["bpp"])):
        line = (f"  {res[pn][i]:>10g} {_f(res['bpp'][i], '.4f'):>8} {_f(res['psnr-rgb'][i], '.2f'):>8} "
                f"{_f(res['ms-ssim-rgb'][i], '.4f'):>8} {_f(res['encoding_time'][i], '.3f'):>8} "
                f"{_f(res['decoding_time'][i], '.3f'):>8}")
        if codec.name in GSI_CODECS:
            line += f"  {res['gaussians_mean'][i]:>9.0f}"
        lines.append(line)
    if not res["bpp"]:
        lines.append("  (no complete rate point)")
    return "\n".join(lines)


def bd_pair(test_res, anchor_res) -> dict:
    tr, ar = test_res["results"], anchor_res["results"]
    out = {}
    for metric, key in (("psnr", "psnr-rgb"), ("ms-ssim", "ms-ssim-rgb")):
        if not tr.get(key) or not ar.get(key):
            out[metric] = _bd.BDResult(None, False, "no data for this metric")
            continue
        out[metric] = _bd.bd_rate([_num(v) for v in ar["bpp"]], [_num(v) for v in ar[key]],
                                  [_num(v) for v in tr["bpp"]], [_num(v) for v in tr[key]], metric=metric)
    return out


def bd_table(measured: dict, published: list[dict]) -> tuple[str, list[dict]]:
    """BD-rate of gsi against every measured peer and published anchor; without gsi,
    of every measured peer against measured JPEG and against its published twin."""
    pairs = []
    if "gsi" in measured:
        for name, r in measured.items():
            if name != "gsi":
                pairs.append(("gsi", measured["gsi"], name, r))
        for a in published:
            pairs.append(("gsi", measured["gsi"], a["_id"] + " (published)", a))
    else:
        if "jpeg" in measured:
            for name, r in measured.items():
                if name != "jpeg":
                    pairs.append((name, r, "jpeg", measured["jpeg"]))
        by_id = {a["_id"]: a for a in published}
        for name, r in measured.items():
            twin = PUBLISHED_TWIN.get(name)
            if twin in by_id:
                pairs.append((name, r, twin + " (published)", by_id[twin]))
    if not pairs:
        return "", []
    lines = ["BD-rate (negative = test needs fewer bits for the same quality; akima; "
             f"'not meaningful' when the quality ranges overlap < {_bd.MIN_OVERLAP:.0%} of the shorter "
             f"range or < {_bd.MIN_POINTS_IN_OVERLAP} points each lie in the overlap)",
             f"  {'test':<10} {'anchor':<44} {'BD-rate PSNR':>15} {'BD-rate MS-SSIM':>16}"]
    records, reasons = [], []
    for tname, tres, aname, ares in pairs:
        bd = bd_pair(tres, ares)
        lines.append(f"  {tname:<10} {aname:<44} {bd['psnr'].format():>15} {bd['ms-ssim'].format():>16}")
        for m in ("psnr", "ms-ssim"):
            if not bd[m].meaningful and bd[m].reason != "no data for this metric":
                reasons.append(f"    {tname} vs {aname} ({m}): {bd[m].reason}")
        records.append({"test": tname, "anchor": aname, "psnr": bd["psnr"].as_dict(),
                        "ms-ssim": bd["ms-ssim"].as_dict()})
    if reasons:
        lines.append("  why not meaningful:")
        lines.extend(reasons)
    return "\n".join(lines), records


# --------------------------------------------------------------------------- run

def _peer_points(specs: list[str]) -> dict:
    out = {}
    for s in specs:
        if "=" not in s:
            raise ValueError(f"--quality expects CODEC=Q1,Q2,..., got {s!r}")
        name, vals = s.split("=", 1)
        out[canonical(name)] = _floats([vals])
    return out


def run(args) -> int:
    try:
        return _run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _iterations_meta(effort: str, iterations) -> dict:
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


def _run(args) -> int:
    t_start = time.perf_counter()
    # ---- `--ray DATASET`: the optional address swallowed the dataset folder
    if args.ray and args.dataset is None and Path(args.ray).is_dir():
        args.dataset, args.ray = args.ray, ""
    if args.jobs is not None and args.jobs < 1:
        raise BenchError("--jobs must be at least 1")
    # ---- dataset
    if args.dataset:
        dataset = Path(args.dataset)
        if not dataset.is_dir():
            raise BenchError(f"dataset folder {dataset} does not exist")
    else:
        dataset = default_dataset()
        if dataset is None:
            raise BenchError("give a dataset folder (a folder of PNG images, e.g. Kodak or DIV2K)")
    images = list_images(dataset, args.images)
    if not images:
        raise BenchError(f"no PNG images in {dataset}")
    kodak = is_kodak(dataset, images)
    name = args.name or dataset_name(dataset)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise BenchError(f"--name must be a plain folder name, got {name!r}")

    # ---- codecs
    try:
        names = []
        for n in str(args.codecs).split(","):
            if n.strip():
                c = canonical(n)
                if c not in names:
                    names.append(c)
        overrides = _peer_points(getattr(args, "quality", []) or [])
        densities = _floats(args.points) if args.points else None
    except ValueError as e:
        raise BenchError(str(e)) from None
    if densities is not None and any(d <= 0 for d in densities):
        raise BenchError("--points densities must be positive")
    effort = getattr(args, "effort", "default")
    gsi_opts = {"iterations": args.iterations, "device": args.device, "seed": args.seed,
                "effort": effort}
    codecs, skipped = [], []
    for n in names:
        pts = densities if n in GSI_CODECS else overrides.get(n)
        codec = make_codec(n, pts, **(gsi_opts if n in GSI_CODECS else {}))
        why = codec.unavailable()
        if why:
            skipped.append((n, why))
            _log(f"skipping {n}: {why}")
            continue
        codec.points = sorted(codec.points)
        codecs.append(codec)
    if not codecs:
        raise BenchError("none of the requested codecs is available")

    ray = ray_started = None
    if args.ray is not None:  # before any work: a missing Ray is a one-line error
        ray, ray_started = ray_init(args.ray or None, None if args.ray else args.jobs)

    out = Path(args.out) if args.out else default_out(name)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / CACHE_NAME
    cached = read_cache(cache_path)

    # ---- tasks
    tasks = []
    for codec in codecs:
        settings = codec.settings()
        spec = (codec.name, gsi_opts if codec.name in GSI_CODECS else {})
        for img in images:
            for p in codec.points:
                key = unit_key(codec.name, img, p, settings)
                if key in cached:
                    continue
                tasks.append({"key": key, "codec": codec.name, "image": img.name, "path": str(img),
                              "point": p, "point_name": codec.point_name, "settings": settings,
                              "spec": spec})
    total_units = sum(len(c.points) for c in codecs) * len(images)
    jobs = max(1, int(args.jobs or 1))
    if ray is not None:
        res = ray.cluster_resources()
        how = (f"ray ({'local' if not args.ray else args.ray}: {res.get('CPU', 0):g} CPUs, "
               f"{res.get('GPU', 0):g} GPUs)")
    else:
        how = f"jobs={jobs}"
    _log(f"dataset {name} ({len(images)} images{', Kodak' if kodak else ''}); codecs "
         f"{', '.join(c.name for c in codecs)}; {total_units} units, {total_units - len(tasks)} cached, "
         f"{len(tasks)} to compute; {how}")
    # Slow codec (gsi) first so parallel workers finish together.
    tasks.sort(key=lambda t: (t["codec"] not in GSI_CODECS, t["image"]))
    n_rows = len(tasks)
    tasks = joint_tasks(tasks)
    if len(tasks) < n_rows:
        _log(f"gsi profiles share one free fit per image and point: {n_rows} encodes in "
             f"{len(tasks)} tasks")

    failures = []
    try:
        if tasks:
            from tqdm import tqdm
            bar = tqdm(total=n_rows, desc="bench", unit="enc", disable=args.no_progress,
                       dynamic_ncols=True, file=sys.stderr)
            with open(cache_path, "a") as fh:
                def take(rows):
                    for row in rows if isinstance(rows, list) else [rows]:
                        take_row(row)

                def take_row(row):
                    want = row.get("settings", {}).get("encoder")
                    if "error" not in row and want and row.get("worker_encoder") not in (None, want):
                        row["error"] = (f"the worker ran another gscodec (encoder "
                                        f"{row['worker_encoder']}, this checkout {want}); install "
                                        f"this version on the workers")
                    if "error" in row:
                        failures.append(row)
                        bar.write(f"FAILED {row['codec']} {row['image']} {row['point_name']}="
                                  f"{row['point']}: {row['error']}")
                    else:
                        row.pop("worker_encoder", None)
                        _append(fh, row)
                        cached[row["key"]] = row
                    bar.set_postfix_str(f"{row['codec']} {row['image']}", refresh=False)
                    bar.update(1)

                try:
                    if ray is not None:
                        _run_ray(ray, tasks, take)
                    elif jobs == 1:
                        for t in tasks:
                            take(run_unit(t))
                    else:
                        import multiprocessing as mp
                        ctx = mp.get_context("spawn")
                        with ctx.Pool(min(jobs, len(tasks)), initializer=_init_worker,
                                      initargs=(jobs,)) as pool:
                            for row in pool.imap_unordered(run_unit, tasks, chunksize=1):
                                take(row)
                except KeyboardInterrupt:
                    bar.close()
                    print(f"\ninterrupted; {len(cached)} results kept in {cache_path}; run again to "
                          f"resume", file=sys.stderr)
                    return 130
            bar.close()
    finally:
        if ray_started:
            ray.shutdown()

    # ---- aggregate + write
    fingerprint = encoder_fingerprint()
    base_meta = {
        "source": "gscodec benchmark (gsi bench)",
        "type": "image",
        "dataset": name,
        "images": [p.name for p in images],
        **git_state(),
        "encoder_fingerprint": fingerprint,
        "command": command_line(args, dataset, out),
        "executor": ("ray" if args.ray == "" else f"ray at {args.ray}") if ray is not None
        else f"processes (jobs={jobs})",
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "psnr_convention": "mean over images of per-image PSNR on 8-bit RGB (CompressAI)",
        "timing": "seconds per image, wall clock; peers single-threaded",
        "skipped_codecs": dict(skipped),
    }
    measured, tables, all_notes = {}, [], []
    for codec in codecs:
        res, per_image, notes = aggregate(codec, images, cached, codec.settings())
        all_notes.extend(notes)
        meta = dict(base_meta, codec=codec.name, settings=codec.settings())
        if codec.name in GSI_CODECS:
            meta.update(effort=effort, **_iterations_meta(effort, args.iterations),
                        seed=args.seed, device=args.device)
        else:
            meta.update(effort=None, iterations=None)
        doc = results_json(codec, res, per_image, meta)
        with open(out / f"{codec.name}.json", "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        measured[codec.name] = doc
        tables.append(format_codec_table(codec, res))
    earlier, notes = load_folder_results(out, base_meta["images"], set(measured))
    all_notes.extend(notes)
    for_bd = {**measured, **earlier}

    anchors_dir = Path(args.anchors_dir) if args.anchors_dir else (default_anchors_dir() if kodak else None)
    published = load_anchors(anchors_dir) if (kodak or args.anchors_dir) else []
    bd_text, bd_records = bd_table(for_bd, published)
    if published and kodak and len(images) < 24:
        all_notes.append(f"published anchors are averages over all 24 Kodak images; this run used "
                         f"{len(images)}")
    if earlier:
        all_notes.append(f"BD-rates and the plot also use the earlier results in this folder: "
                         f"{', '.join(f'{n}.json' for n in earlier)}")

    text = [f"Rate-distortion on {name} ({len(images)} images)", ""]
    text += [t + "\n" for t in tables]
    if bd_text:
        text += [bd_text, ""]
    if skipped:
        text += ["skipped codecs:"] + [f"  {n}: {why}" for n, why in skipped] + [""]
    if all_notes:
        text += ["notes:"] + [f"  {n}" for n in dict.fromkeys(all_notes)] + [""]
    if failures:
        text += [f"{len(failures)} encodes FAILED (not cached; re-run to retry):"]
        text += [f"  {r['codec']} {r['image']} {r['point_name']}={r['point']}: {r['error']}"
                 for r in failures[:20]] + [""]
    report = "\n".join(text)
    _log(report)
    with open(out / "summary.txt", "w") as f:
        f.write(report + "\n")
    with open(out / "bdrate.json", "w") as f:
        json.dump(jsonable({
            "dataset": name, "images": base_meta["images"], "git_commit": base_meta["git_commit"],
            "encoder_fingerprint": fingerprint,
            "codecs": {n: f"{n}.json" for n in for_bd},
            "anchors_dir": _rel(str(anchors_dir)) if (published and anchors_dir) else None,
            "rule": {"min_overlap": _bd.MIN_OVERLAP, "min_points_in_overlap": _bd.MIN_POINTS_IN_OVERLAP,
                     "method": _bd.METHOD, "ms-ssim": "converted to dB, -10 log10(1 - MS-SSIM)",
                     "sign": "negative = test needs fewer bits for the same quality"},
            "pairs": bd_records}), f, indent=2)
        f.write("\n")

    if not args.no_plot:
        from .plot import plot_rd_panels
        shown_anchors = published if args.anchors else []
        xmax = max((max(_num(v) for v in d["results"]["bpp"]) for d in for_bd.values()
                    if d["results"].get("bpp")), default=None)
        try:
            p = plot_rd_panels(out / "rd.png", list(for_bd.values()), shown_anchors,
                               title=f"{name}: {len(images)} images",
                               max_bpp=xmax if shown_anchors else None)
            if p:
                _log(f"wrote {p}")
        except Exception as e:  # plotting must not lose the measurements
            _log(f"plot rd.png failed: {e}")
    _log(f"results in {out}/ ({time.perf_counter() - t_start:.1f} s)")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsi bench", description=BENCH_DESCRIPTION)
    return add_arguments(p)


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
