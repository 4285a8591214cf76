"""The benchmark's results: per-codec means over images (`aggregate`), CompressAI's
results JSON, the printed tables, BD-rates against the measured peers and published
anchors (`bd_table`), and the files a run writes (`write_report`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import bdrate as _bd
from .peers import ALL_CODECS, EXTRA_CODECS, GSI_CODECS
from .tasks import json_number, jsonable, unit_key

PUBLISHED_TWIN = {"jpeg": "jpeg", "webp": "webp", "jpeg2000": "jpeg2000",
                  "heic": "bpg_444_x265_ycbcr"}


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
            vals = [json_number(r.get(k)) for r in rows]
            vals = [v for v in vals if not math.isnan(v)]
            return float(np.mean(vals)) if vals else math.nan

        res["bpp"].append(mean("bpp"))
        res["psnr-rgb"].append(mean("psnr"))
        ms = [json_number(r.get("ms_ssim")) for r in rows]
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
        "description": codec.description + (f"; settings {codec.settings()}"
                                            if codec.settings() else ""),
        "codec": codec.name,
        "meta": meta,
        "results": res,
        "per_image": [per_image_point(r) for r in per_image],
    })

def load_folder_results(out: Path, images: list[str], skip: set) -> tuple[dict, list[str]]:
    """The other codecs' results already in the dataset folder (an earlier run of other
    codecs), kept only when measured on the same images.  Returns ({codec: doc}, notes)."""
    found, notes = {}, []
    for name in ALL_CODECS + EXTRA_CODECS:
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
    v = json_number(v) if v is not None else math.nan
    return "nan" if math.isnan(v) else format(v, fmt)

def format_codec_table(codec, res) -> str:
    pn = codec.point_name
    lines = [f"{codec.label} [{codec.name}]",
             f"  {pn:>10} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>8} {'dec s':>8}"
             + ("  Gaussians" if codec.name in GSI_CODECS else "")]
    for i in range(len(res["bpp"])):
        line = (f"  {res[pn][i]:>10g} {_f(res['bpp'][i], '.4f'):>8} "
                f"{_f(res['psnr-rgb'][i], '.2f'):>8} "
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
        out[metric] = _bd.bd_rate([json_number(v) for v in ar["bpp"]],
                                  [json_number(v) for v in ar[key]],
                                  [json_number(v) for v in tr["bpp"]],
                                  [json_number(v) for v in tr[key]], metric=metric)
    return out

# The codecs whose BD-rates against every other codec the table gives (gsi-ssim against
# gsi too, not the other way round).
BD_TESTS = ("gsi", "gsi-ssim")


def bd_pairs(measured: dict, published: list[dict]) -> list[tuple]:
    """(test name, its results, anchor name, its results) of the BD-rate table: gsi (and
    gsi-ssim) against every measured peer and published anchor; without them, every
    measured peer against measured JPEG and against its published twin."""
    pairs = []
    tests = [t for t in BD_TESTS if t in measured]
    for test in tests:
        for name, r in measured.items():
            if name not in tests[tests.index(test):]:
                pairs.append((test, measured[test], name, r))
        for a in published:
            pairs.append((test, measured[test], a["_id"] + " (published)", a))
    if tests:
        return pairs
    if "jpeg" in measured:
        for name, r in measured.items():
            if name != "jpeg":
                pairs.append((name, r, "jpeg", measured["jpeg"]))
    by_id = {a["_id"]: a for a in published}
    for name, r in measured.items():
        twin = PUBLISHED_TWIN.get(name)
        if twin in by_id:
            pairs.append((name, r, twin + " (published)", by_id[twin]))
    return pairs


def bd_table(measured: dict, published: list[dict]) -> tuple[str, list[dict]]:
    """The BD-rate table of `bd_pairs`: (its text, one record per pair)."""
    pairs = bd_pairs(measured, published)
    if not pairs:
        return "", []
    lines = ["BD-rate (negative = test needs fewer bits for the same quality; akima; "
             f"'not meaningful' when the quality ranges overlap < {_bd.MIN_OVERLAP:.0%} of the "
             "shorter "
             f"range or < {_bd.MIN_POINTS_IN_OVERLAP} points each lie in the overlap)",
             f"  {'test':<10} {'anchor':<44} {'BD-rate PSNR':>15} {'BD-rate MS-SSIM':>16}"]
    records, reasons = [], []
    for tname, tres, aname, ares in pairs:
        bd = bd_pair(tres, ares)
        lines.append(f"  {tname:<10} {aname:<44} {bd['psnr'].format():>15} "
                     f"{bd['ms-ssim'].format():>16}")
        for m in ("psnr", "ms-ssim"):
            if not bd[m].meaningful and bd[m].reason != "no data for this metric":
                reasons.append(f"    {tname} vs {aname} ({m}): {bd[m].reason}")
        records.append({"test": tname, "anchor": aname, "psnr": bd["psnr"].as_dict(),
                        "ms-ssim": bd["ms-ssim"].as_dict()})
    if reasons:
        lines.append("  why not meaningful:")
        lines.extend(reasons)
    return "\n".join(lines), records
