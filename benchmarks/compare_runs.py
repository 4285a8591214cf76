#!/usr/bin/env python
"""BD-rate of one rate-distortion run against another (e.g. a new encoder against the
results of the previous release).

    python benchmarks/compare_runs.py OLD_DIR NEW_DIR [--codecs gsi,jpeg2000] [--json OUT]

OLD_DIR and NEW_DIR are `rd.py --out` folders; for every codec whose CODEC.json is in both,
prints the BD-rate (PSNR and MS-SSIM) of NEW against OLD: negative means NEW needs fewer
bits for the same quality. A peer codec (JPEG 2000, ...) compared with itself across the two
runs should come out near 0 %, which checks that the images and settings match. Where the
two runs hold different images (a run on the first few images against a full one), both are
cut to the images they share and their mean curves recomputed from the per-image rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gscodec.benchmark.report import bd_pair  # noqa: E402

POINT_KEYS = ("density", "target_bpp", "quality", "point")
MEANS = ("bpp", "psnr-rgb", "ms-ssim-rgb")


def restrict(doc: dict, images: set) -> dict:
    """doc with its mean curve over `images` only (per rate point, from the per-image rows)."""
    rows = [r for r in doc["per_image"] if r["image"] in images]
    key = next(k for k in POINT_KEYS if k in rows[0])
    points = sorted({r[key] for r in rows})
    res = {m: [sum(r[m] for r in rows if r[key] == pt) / sum(r[key] == pt for r in rows)
               for pt in points] for m in MEANS if all(r.get(m) is not None for r in rows)}
    return {**doc, "results": res}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="results folder of the anchor run")
    ap.add_argument("new", help="results folder of the test run")
    ap.add_argument("--codecs", default=None,
                    help="comma-separated codecs (default: all found in both folders)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    old, new = Path(args.old), Path(args.new)
    names = (args.codecs.split(",") if args.codecs else
             sorted(f.stem for f in new.glob("*.json") if (old / f.name).exists()
                    and "results" in json.loads(f.read_text())))
    if not names:
        print(f"compare_runs: no codec results in both {old} and {new}", file=sys.stderr)
        return 1
    out = {}
    print(f"BD-rate of {new} against {old}")
    print("codec".ljust(12) + "PSNR".rjust(16) + "MS-SSIM".rjust(16))
    for name in names:
        try:
            a = json.loads((old / f"{name}.json").read_text())
            t = json.loads((new / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"compare_runs: cannot read {name}.json: {e}", file=sys.stderr)
            return 1
        ia, it = (set(d.get("meta", {}).get("images", ())) for d in (a, t))
        common = ia & it
        if ia and it and (common != ia or common != it):
            print(f"{name}: the {len(common)} images both runs have")
            a, t = restrict(a, common), restrict(t, common)
        bd = bd_pair(t, a)
        out[name] = {m: r.as_dict() for m, r in bd.items()}
        print(name.ljust(12) + "".join(bd[m].format().rjust(16) for m in ("psnr", "ms-ssim")))
    if args.json:
        Path(args.json).write_text(json.dumps({"old": str(old), "new": str(new),
                                               "bd_rate": out}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
