"""``gsi bench``: rate-distortion benchmark of gscodec against image-codec peers.

Entry points for the CLI: ``add_arguments(parser)`` and ``run(args) -> int``;
``main(argv)`` for a stand-alone call (benchmarks/rd.py).

Output folder (``--out``):
  cache.jsonl        one JSON line per (codec, image, rate point, settings): resumable
  <codec>.json       CompressAI results schema + "per_image" rows + "meta"
  summary.txt        the printed tables and BD-rates
  bdrate.json        BD-rate figures with the overlap verdicts
  rd_psnr.png, rd_msssim.png
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from . import bdrate as _bd
from .metrics import bpp as _bpp, load_image, ms_ssim, ms_ssim_note, psnr
from .peers import ALL_CODECS, GSI_CODECS, canonical, make_codec

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_NAME = "cache.jsonl"
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
    p.add_argument("dataset", nargs="?", default=None,
                   help="folder of PNG images (default: ../shared/datasets/kodak beside the checkout)")
    p.add_argument("--points", nargs="+", default=None, metavar="DENSITY",
                   help="gsi rate points as Gaussian densities in Gaussians per 1000 pixels "
                        "(N = round(density*W*H/1000)); e.g. --points 2,4,8,16 (the default)")
    p.add_argument("--iterations", type=int, default=None,
                   help="fitting iterations passed to gscodec.encode (default: the codec's own)")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated subset of {','.join(ALL_CODECS)} (default: all)")
    p.add_argument("--quality", action="append", default=[], metavar="CODEC=Q1,Q2,...",
                   help="override a peer's rate points (JPEG/WebP/AVIF/JXL quality; JPEG 2000 target bpp)")
    p.add_argument("--images", type=int, default=None, metavar="N", help="use only the first N images")
    p.add_argument("--device", default="auto", help="device for gscodec (auto, cpu, cuda)")
    p.add_argument("--seed", type=int, default=0, help="seed passed to gscodec.encode")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="parallel worker processes (spawn); each uses one torch thread when > 1")
    p.add_argument("--anchors", action="store_true",
                   help="draw published anchors (Kodak) dashed on the plots")
    p.add_argument("--anchors-dir", default=None,
                   help="folder of published results JSON (default: ../shared/anchors/kodak when "
                        "the dataset is Kodak)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
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


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating,)):
        return _jsonable(float(v))
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


def run_unit(task: dict) -> dict:
    """Encode one image at one point, decode the bytes, measure.  Never raises."""
    row = {k: task[k] for k in ("key", "codec", "image", "point", "point_name", "settings")}
    try:
        codec = _get_codec(task["spec"])
        rgb = load_image(task["path"])
        h, w = rgb.shape[:2]
        t0 = time.perf_counter()
        data, extra = codec.encode(rgb, task["point"])
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = codec.decode(data)
        t_dec = time.perf_counter() - t0
        if rec.shape != rgb.shape:
            raise ValueError(f"decoded shape {rec.shape} != source {rgb.shape}")
        row.update({"width": w, "height": h, "bytes": len(data), "bpp": _bpp(len(data), h, w),
                    "psnr": psnr(rgb, rec), "ms_ssim": ms_ssim(rgb, rec),
                    "encoding_time": t_enc, "decoding_time": t_dec, **extra})
        note = ms_ssim_note(h, w)
        if note:
            row["note"] = note
    except Exception as e:  # reported by the runner, not cached
        import traceback
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc(limit=6)
    return row


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
    fh.write(json.dumps(_jsonable(row)) + "\n")
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


def results_json(codec, res, per_image, meta) -> dict:
    return _jsonable({
        "name": codec.label,
        "description": codec.description + (f"; settings {codec.settings()}" if codec.settings() else ""),
        "codec": codec.name,
        "results": res,
        "per_image": per_image,
        "meta": meta,
    })


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


def _bd_pair(test_res, anchor_res) -> dict:
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
        bd = _bd_pair(tres, ares)
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
    t_start = time.perf_counter()
    # ---- dataset
    if args.dataset:
        dataset = Path(args.dataset)
        if not dataset.is_dir():
            print(f"error: dataset folder {dataset} does not exist", file=sys.stderr)
            return 2
    else:
        dataset = default_dataset()
        if dataset is None:
            print("error: give a dataset folder (a folder of PNG images, e.g. Kodak or DIV2K)",
                  file=sys.stderr)
            return 2
    images = list_images(dataset, args.images)
    if not images:
        print(f"error: no PNG images in {dataset}", file=sys.stderr)
        return 2
    kodak = is_kodak(dataset, images)

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
        print(f"error: {e}", file=sys.stderr)
        return 2
    if densities is not None and any(d <= 0 for d in densities):
        print("error: --points densities must be positive", file=sys.stderr)
        return 2
    gsi_opts = {"iterations": args.iterations, "device": args.device, "seed": args.seed}
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
        print("error: none of the requested codecs is available", file=sys.stderr)
        return 2

    out = Path(args.out)
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
    _log(f"dataset {dataset} ({len(images)} images{', Kodak' if kodak else ''}); codecs "
         f"{', '.join(c.name for c in codecs)}; {total_units} units, {total_units - len(tasks)} cached, "
         f"{len(tasks)} to compute; jobs={args.jobs}")
    # Slow codec (gsi) first so parallel workers finish together.
    tasks.sort(key=lambda t: (t["codec"] not in GSI_CODECS, t["image"]))

    failures = []
    jobs = max(1, int(args.jobs or 1))
    if tasks:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc="bench", unit="enc", disable=args.no_progress,
                   dynamic_ncols=True, file=sys.stderr)
        with open(cache_path, "a") as fh:
            def take(row):
                if "error" in row:
                    failures.append(row)
                    bar.write(f"FAILED {row['codec']} {row['image']} {row['point_name']}={row['point']}: "
                              f"{row['error']}")
                else:
                    _append(fh, row)
                    cached[row["key"]] = row
                bar.set_postfix_str(f"{row['codec']} {row['image']}", refresh=False)
                bar.update(1)

            try:
                if jobs == 1:
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
                print(f"\ninterrupted; {len(cached)} results kept in {cache_path}; run again to resume",
                      file=sys.stderr)
                return 130
        bar.close()

    # ---- aggregate + write
    meta = {
        "command": shlex.join(sys.argv),
        "arguments": {k: (v if isinstance(v, (str, int, float, bool, list, type(None))) else str(v))
                      for k, v in vars(args).items() if not callable(v)},
        "dataset": str(dataset.resolve()),
        "images": [p.name for p in images],
        "machine": machine_info(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "psnr_convention": "mean over images of per-image PSNR on 8-bit RGB (CompressAI)",
        "timing": "seconds per image, wall clock; peers single-threaded",
    }
    measured, tables, all_notes = {}, [], []
    for codec in codecs:
        res, per_image, notes = aggregate(codec, images, cached, codec.settings())
        all_notes.extend(notes)
        doc = results_json(codec, res, per_image, {**meta, "skipped_codecs": dict(skipped)})
        with open(out / f"{codec.name}.json", "w") as f:
            json.dump(doc, f, indent=2)
        measured[codec.name] = doc
        tables.append(format_codec_table(codec, res))

    anchors_dir = Path(args.anchors_dir) if args.anchors_dir else (default_anchors_dir() if kodak else None)
    published = load_anchors(anchors_dir) if (kodak or args.anchors_dir) else []
    bd_text, bd_records = bd_table(measured, published)
    if published and kodak and len(images) < 24:
        all_notes.append(f"published anchors are averages over all 24 Kodak images; this run used "
                         f"{len(images)}")

    text = [f"Rate-distortion on {dataset} ({len(images)} images)", ""]
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
        json.dump(_jsonable({"pairs": bd_records, "rule": {"min_overlap": _bd.MIN_OVERLAP,
                   "min_points_in_overlap": _bd.MIN_POINTS_IN_OVERLAP, "method": _bd.METHOD}}), f, indent=2)

    if not args.no_plot:
        from .plot import plot_rd
        shown_anchors = published if args.anchors else []
        xmax = max((max(_num(v) for v in d["results"]["bpp"]) for d in measured.values()
                    if d["results"]["bpp"]), default=None)
        for metric, fname in (("psnr", "rd_psnr.png"), ("ms-ssim", "rd_msssim.png")):
            try:
                p = plot_rd(out / fname, list(measured.values()), shown_anchors, metric=metric,
                            title=f"{dataset.name}: {len(images)} images",
                            max_bpp=xmax if shown_anchors else None)
                if p:
                    _log(f"wrote {p}")
            except Exception as e:  # plotting must not lose the measurements
                _log(f"plot {fname} failed: {e}")
    _log(f"results in {out}/ ({time.perf_counter() - t_start:.1f} s)")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsi bench", description="Rate-distortion benchmark of gscodec "
                                "against JPEG, WebP, JPEG 2000, AVIF and JPEG XL.")
    return add_arguments(p)


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
