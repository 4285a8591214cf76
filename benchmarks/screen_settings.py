"""Screen encoder settings on whole encodes: each arm is a set of `FitConfig` overrides, every
arm encodes every image at every density (default effort unless overridden, one torch
thread), and each arm's file is compared with the first arm's at equal rate:

    gain = dPSNR + slope * ln(bytes of the first arm / bytes of this arm)

(the same for MS-SSIM in dB, -10 log10(1 - MS-SSIM)), with the local slope of the Kodak
curve in dB per e-fold of rate (SLOPES by density; MS-SSIM: `pipeline.ms_ssim_slope` at the
density, the `--tune ssim` curve's, unless --ms-slope fixes one). Prints a table and
writes JSON rows (one per encode, appended, so that runs side by side can share one file).
This is how the fourth session's screens of docs/experiments.md were measured.

    python benchmarks/screen_settings.py --images kodim12,kodim16 --densities 11,24 \\
        --arms base: rf10:refine_fraction=0.1 --out /tmp/screen.jsonl

An image is a path to a PNG or a Kodak name (kodimNN, in `gsi bench`'s default dataset). An override
is FIELD=VALUE with a FitConfig field of type float, int, bool (0/1) or str, or class.FIELD=VALUE
with a field of the encoder's quantization class (`quantize.ENCODER_CLASS`: pos_bits,
scale_steps, rot_levels, color_den; the rules of `QuantConfig.for_fit` still apply on top).

--tail DIR screens settings that act after the free fit (steps, rounding) on one saved free
fit per image and density (the first arm's settings; kept in DIR, so that a second screen
reuses them): each arm then runs only the gsi tail (`pipeline.gsi_tail`: steps, progressive
rounding, colours, the file), 5 to 10 times faster than a whole encode and without the fit's
noise between arms. The sixth session's quantization screens were measured so.

    python benchmarks/screen_settings.py --images kodim16,kodim23 --densities 5,24 \
        --tail /tmp/fits --arms base: ss6:class.scale_steps=6 nosnap:snap_positions=0
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

# Local slopes of the committed Kodak curve, dB of PSNR per e-fold of rate, by density.
SLOPES = {2: 2.75, 5: 3.0, 11: 3.34, 24: 3.94}


def parse_arm(text: str, cfg_fields: dict, class_fields: dict | None = None
              ) -> tuple[str, dict]:
    """NAME:FIELD=VALUE,FIELD=VALUE -> (NAME, overrides), values typed as the field; a
    class.FIELD key (a field of class_fields) is kept with its prefix."""
    name, _, opts = text.partition(":")
    kw = {}
    for opt in filter(None, opts.split(",")):
        key, sep, val = opt.partition("=")
        known = class_fields if key.startswith("class.") else cfg_fields
        field_name = key.removeprefix("class.")
        if not sep or known is None or field_name not in known:
            raise SystemExit(f"screen_settings: {opt!r} is not FIELD=VALUE of a FitConfig field "
                             "or class.FIELD=VALUE of a quantization class field")
        kind = type(known[field_name])
        if kind is bool:
            kw[key] = val.lower() in ("1", "true", "yes")
        elif kind in (int, float, str):
            kw[key] = kind(val)
        else:
            raise SystemExit(f"screen_settings: field {key} ({kind.__name__}) cannot be set here")
    return name or "arm", kw


def load(spec: str) -> tuple[str, np.ndarray]:
    from gscodec.benchmark.distortion import load_rgb
    from gscodec.benchmark.provenance import default_dataset
    path, kodak = Path(spec), default_dataset()
    if not path.exists() and kodak is not None:
        path = kodak / f"{spec}.png"
    if not path.exists():
        raise SystemExit(f"screen_settings: no image {spec!r} (a PNG path or a Kodak name)")
    return path.stem, load_rgb(str(path))


def with_gain(r: dict, b: dict, ms_slope: float | None) -> dict:
    """Row r with its gain at equal rate against row b (the first arm's, same image and
    density; b = r gives 0); ms_slope None: `ms_ssim_slope` at the row's density."""
    from gscodec.encoder.pipeline import ms_ssim_slope
    lr = math.log(b["bytes"] / r["bytes"])
    slope = SLOPES.get(r["density"], 3.3)
    if ms_slope is None:
        ms_slope = ms_ssim_slope(r["density"])
    ms = (None if r["msssim_db"] is None or b["msssim_db"] is None
          else r["msssim_db"] - b["msssim_db"] + ms_slope * lr)
    return dict(r, gain_psnr=r["psnr"] - b["psnr"] + slope * lr, gain_msssim_db=ms,
                bytes_ratio=r["bytes"] / b["bytes"], time_ratio=r["seconds"] / b["seconds"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="comma-separated PNG paths or Kodak names")
    ap.add_argument("--densities", default="5", help="Gaussians per 1000 pixels, comma-separated")
    ap.add_argument("--arms", nargs="+", required=True,
                    help="NAME:FIELD=VALUE,... (the first arm is the reference; NAME: alone is "
                         "the defaults)")
    ap.add_argument("--effort", default="default", choices=("fast", "default", "max"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ms-slope", type=float, default=None,
                    help="dB of MS-SSIM per e-fold of rate, one for every density (default: "
                         "the tune-ssim Kodak curve's at each density, 2.5 / 3.3 / 4.0 / 4.7 "
                         "at 2 / 5 / 11 / 24)")
    ap.add_argument("--out", help="append one JSON row per encode to this file")
    ap.add_argument("--tail", metavar="DIR",
                    help="screen the gsi tail only, on free fits saved in DIR (see above)")
    a = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    import gscodec
    from gscodec.benchmark.distortion import ms_ssim, psnr
    from gscodec.encoder.api import default_gaussians, fit_config, make_objective
    from gscodec.encoder.pipeline import Pipeline, encode_pipeline, fit_stages, gsi_tail
    from gscodec.encoder.stages import EncodeState
    from gscodec.render.kernel_torch import release_buffers

    base_cfg = fit_config(effort=a.effort, seed=a.seed)
    cfg_fields = {f.name: getattr(base_cfg, f.name) for f in fields(base_cfg)}
    base_class = base_cfg.quant.classes[0]
    class_fields = {f: getattr(base_class, f) for f in ("pos_bits", "scale_steps",
                                                         "rot_levels", "color_den")}
    arms = [parse_arm(t, cfg_fields, class_fields) for t in a.arms]

    def config(kw: dict):
        """base_cfg with an arm's overrides (class.FIELD ones into every class of its quant)."""
        ckw = {k.removeprefix("class."): v for k, v in kw.items() if k.startswith("class.")}
        cfg = replace(base_cfg, **{k: v for k, v in kw.items() if not k.startswith("class.")})
        if ckw:
            cfg = replace(cfg, quant=replace(cfg.quant, classes=tuple(
                replace(k, **ckw) for k in cfg.quant.classes)))
        return cfg

    def saved_fit(name: str, d: float, obj, n: int) -> EncodeState:
        """The first arm's free fit of this image and density, from a.tail or made there."""
        path = Path(a.tail) / f"{name}_d{d:g}_{a.effort}_s{a.seed}.pt"
        if path.exists():
            return torch.load(path, weights_only=False)
        cfg0 = config(arms[0][1])
        state = Pipeline(fit_stages(cfg0, n)).run(obj, EncodeState.new(obj, cfg0.seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return state
    densities = [float(d) for d in a.densities.split(",")]
    rows = []
    print(f"{'image':10s} {'density':>7s} {'arm':12s} {'bpp':>7s} {'PSNR':>7s} {'MS-SSIM dB':>10s}"
          f" {'s':>6s} {'gain dB':>8s} {'(MS-SSIM)':>9s}", flush=True)
    for spec in a.images.split(","):
        name, rgb = load(spec)
        h, w = rgb.shape[:2]
        for d in densities:
            n = default_gaussians(h, w, d)
            base = None   # the first arm's row of this image and density
            fitted = None
            for arm, kw in arms:
                cfg = config(kw)
                obj = make_objective(rgb, cfg)
                if a.tail and fitted is None:
                    fitted = saved_fit(name, d, obj, n)
                t0 = time.perf_counter()
                if a.tail:
                    state = Pipeline(gsi_tail(cfg, n)).run(obj, fitted.fork())
                else:
                    state = encode_pipeline(cfg, n).run(obj, EncodeState.new(obj, cfg.seed))
                secs = time.perf_counter() - t0
                release_buffers()
                dec = gscodec.decode(state.data)[:, :, :3]
                m = ms_ssim(rgb, dec)   # NaN under 161 pixels: no MS-SSIM figures then
                m_db = -10 * math.log10(max(1e-12, 1 - m)) if math.isfinite(m) else None
                row = dict(image=name, density=d, arm=arm, overrides=kw, bytes=len(state.data),
                           bpp=len(state.data) * 8 / (h * w), psnr=psnr(rgb, dec),
                           msssim=m if math.isfinite(m) else None, msssim_db=m_db, seconds=secs)
                base = base or row
                g = with_gain(row, base, a.ms_slope)
                rows.append(g)
                print(f"{name:10s} {d:7g} {arm:12s} {row['bpp']:7.4f} {row['psnr']:7.3f} "
                      f"{_f(row['msssim_db'], '10.3f')} {secs:6.1f} {g['gain_psnr']:+8.3f} "
                      f"{_f(g['gain_msssim_db'], '+9.3f')}", flush=True)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(g) + "\n")
    for arm, _ in arms[1:]:
        sel = [r for r in rows if r["arm"] == arm]
        ms = [r["gain_msssim_db"] for r in sel if r["gain_msssim_db"] is not None]
        print(f"{arm}: mean gain {np.mean([r['gain_psnr'] for r in sel]):+.3f} dB PSNR, "
              f"{_f(np.mean(ms) if ms else None, '+.3f')} dB MS-SSIM at equal rate against "
              f"{arms[0][0]} ({len(sel)} encodes)")
    return 0


def _f(v, spec: str) -> str:
    """v formatted, or n/a (no MS-SSIM), padded to the spec's width."""
    if v is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "n/a".rjust(int(width) if width else 0)
    return format(v, spec)


if __name__ == "__main__":
    sys.exit(main())
