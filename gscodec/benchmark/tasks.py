"""The benchmark's units of work and their cache: one task per (codec, image, rate point,
settings) not yet in ``cache.jsonl``; a task encodes, decodes and measures (`run_unit`,
never raises); gsi profiles at the same image and point share one free fit
(`joint_tasks`)."""
from __future__ import annotations

import functools
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .distortion import bpp as _bpp
from .distortion import load_rgb, ms_ssim, ms_ssim_note, psnr
from .peers import GSI_CODECS, encoder_fingerprint, make_codec

CACHE_NAME = "cache.jsonl"


class BenchError(Exception):
    """A user error reported as one line, exit status 2."""

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

def json_number(v):
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


def make_tasks(codecs, images: list[Path], cached: dict, gsi_opts: dict) -> list[dict]:
    """A task for every codec, image and point whose key is not in the cache."""
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
    return tasks


# --------------------------------------------------------------------------- worker

_CODECS: dict = {}

def init_worker(jobs: int):
    if jobs > 1:
        one_thread()

def one_thread():
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

ROW_KEYS = ("key", "codec", "image", "point", "point_name", "settings")

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
    row = {k: task[k] for k in ROW_KEYS}
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
    rows = [{k: t[k] for k in ROW_KEYS} for t in subs]
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

def append_row(fh, row):
    fh.write(json.dumps(jsonable(row)) + "\n")
    fh.flush()
    try:
        os.fsync(fh.fileno())
    except OSError:
        pass
