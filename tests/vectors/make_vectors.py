"""Regenerate the .gsi test vectors: python tests/vectors/make_vectors.py

Each vector NAME.gsi comes with NAME.json: the header fields and the exact decoded
integers in file order (x, y, major, minor, rot, color, cls; version 5: also the waves'
amp, axis, freq, phase). The inputs are deterministic (fixed seeds), so rerunning
reproduces the same bytes unless the format changed.
Vectors named v1_* to v4_* are version-1 to version-4 files kept to test that old files
still decode; this script does not write them (the writer produces version 5).
"""
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from gscodec.bitstream import format as gsi  # noqa: E402
from gscodec.bitstream.gaussianimage import GIGaussians  # noqa: E402
from gscodec.bitstream.model import QuantClass, QuantizedGaussians  # noqa: E402

WAVE_FIELDS = ("wave_den", "wave_freqs", "wave_f0", "wave_phases")
WAVE_PARTS = ("amp", "axis", "freq", "phase")


def _quant_class(p) -> QuantClass:
    """[pos_bits, scale_steps, rot_levels, color_den] or, version 3, the same followed by
    area_lo and the list of the denominators of colour buckets 1..B-1, or, version 4, all
    that followed by rot_bias, or, version 5, all that followed by wave_den, wave_freqs,
    wave_f0, wave_phases."""
    if len(p) == 4:
        return QuantClass(*p)
    return QuantClass(*p[:4], area_lo=p[4], color_dens=tuple(p[5]),
                      **({"rot_bias": p[6]} if len(p) > 6 else {}),
                      **dict(zip(WAVE_FIELDS, p[7:11], strict=False)))


def _class_json(qc: QuantClass, version: int) -> list:
    return (list(qc.astuple()) + ([qc.area_lo, list(qc.color_dens)] if version >= 3 else [])
            + ([qc.rot_bias] if version >= 4 else [])
            + (list(qc.wave_steps()) if version >= 5 else []))


def qg_from_lists(w, h, c, xy, ls, rot, col, params=(2, 8, 32, 255), masked=False,
                  classes=None, cls=None, wave=None):
    n = len(rot)
    classes = tuple(_quant_class(p) for p in classes) if classes else (QuantClass(*params),)
    return QuantizedGaussians(w, h, c, np.array(xy, np.int32).reshape(n, 2),
                              np.array(ls, np.int32).reshape(n, 2),
                              np.array(rot, np.int32).reshape(n),
                              np.array(col, np.int32).reshape(n, c), masked=masked,
                              classes=classes, cls=cls,
                              wave=None if wave is None
                              else np.array(wave, np.int32).reshape(n, 4))


def vectors():
    rng = np.random.default_rng(20240611)
    out = {}
    # 1: one grey Gaussian in a 1x1 image
    out["single_gray_1x1"] = qg_from_lists(1, 1, 1, [[2, 2]], [[0, -4]], [5], [[200]])
    # 2: 20 RGB Gaussians, 16x12, default quantization
    n = 20
    xy = np.stack([rng.integers(0, 16 * 4 + 1, n), rng.integers(0, 12 * 4 + 1, n)], 1)
    major = rng.integers(-8, 24, n)
    minor = major - rng.integers(0, 10, n)
    out["rgb_16x12_20"] = qg_from_lists(
        16, 12, 3, xy, np.stack([major, np.maximum(minor, -24)], 1),
        rng.integers(0, 32, n), rng.integers(0, 256, (n, 3)))
    # 3: RGBA with a duplicate, masked flag, non-default quantization
    n = 9
    xy = np.stack([rng.integers(0, 10 * 8 + 1, n), rng.integers(0, 7 * 8 + 1, n)], 1)
    major = rng.integers(-7, 40, n)
    ls = np.stack([major, major - rng.integers(0, 6, n)], 1)
    rot, col = rng.integers(0, 64, n), rng.integers(-100, 1100, (n, 4))
    xy[3], ls[3], rot[3], col[3] = xy[7], ls[7], rot[7], col[7]
    out["rgba_masked_10x7"] = qg_from_lists(10, 7, 4, xy, ls, rot, col,
                                            params=(3, 4, 64, 1000), masked=True)
    # 4: extreme values (raw bits, long tokens), LA, largest image and quantization
    w = h = 16384
    p = (8, 64, 4096, 65535)
    xy = [[0, 0], [w << 8, h << 8], [12345, 4000000], [w << 8, 0], [1, 1]]
    ls = [[15 * 64, -3 * 64], [-3 * 64, -3 * 64], [15 * 64, 15 * 64], [100, 99], [0, 0]]
    rot = [4095, 0, 2048, 1, 7]
    col = [[-2 * 65535, 3 * 65535], [3 * 65535, -2 * 65535], [0, 0], [65535, 1], [-1, 2]]
    out["extreme_la_16384"] = qg_from_lists(w, h, 2, xy, ls, rot, col, params=p)
    # 5: three classes (fine, default, coarse steps), RGB, some isotropic Gaussians
    n = 30
    classes = [(3, 32, 256, 32), (2, 16, 128, 64), (1, 8, 32, 128)]
    cls = rng.integers(0, 3, n)
    pb = np.array([c[0] for c in classes])[cls]
    ss = np.array([c[1] for c in classes])[cls]
    xy = np.stack([rng.integers(0, (24 << pb) + 1), rng.integers(0, (16 << pb) + 1)], 1)
    major = rng.integers(-2 * ss, 4 * ss)
    minor = np.where(rng.random(n) < 0.3, major, major - rng.integers(0, 2 * ss))
    rot = rng.integers(0, np.array([c[2] for c in classes])[cls])
    den = np.array([c[3] for c in classes])[cls]
    col = (rng.random((n, 3)) * 1.2 * den[:, None]).astype(np.int64)
    out["classes_rgb_24x16_30"] = qg_from_lists(24, 16, 3, xy, np.stack([major, minor], 1),
                                                rot, col, classes=classes, cls=cls)
    # 6: colour buckets (version 3): class 0 with four buckets from area octave 1, class 1
    # with two from octave -2; sums major + minor below zero test the floor division
    n = 40
    classes = [(2, 16, 128, 40, 1, [57, 80, 113]), (1, 8, 32, 64, -2, [128])]
    cls = rng.integers(0, 2, n)
    pb = np.array([c[0] for c in classes])[cls]
    ss = np.array([c[1] for c in classes])[cls]
    xy = np.stack([rng.integers(0, (32 << pb) + 1), rng.integers(0, (24 << pb) + 1)], 1)
    major = rng.integers(-3 * ss // 2, 4 * ss)
    minor = np.maximum(np.where(rng.random(n) < 0.3, major, major - rng.integers(0, 3 * ss)),
                       -3 * ss)
    rot = rng.integers(0, np.array([c[2] for c in classes])[cls])
    qcs = [_quant_class(c) for c in classes]
    den = np.array([np.array(qcs[k].dens())[qcs[k].bucket([[a, b]])[0]]
                    for k, a, b in zip(cls, major, minor, strict=False)])
    col = (rng.random((n, 3)) * 1.2 * den[:, None]).astype(np.int64) - den[:, None] // 4
    out["buckets_rgb_32x24_40"] = qg_from_lists(32, 24, 3, xy, np.stack([major, minor], 1),
                                                rot, col, classes=classes, cls=cls)
    # 8: angle levels by shape and size (version 4): class 0 with rot_bias -2 (levels from
    # 1 to 256, nearly round Gaussians with one level), class 1 with the uniform step
    n = 60
    classes = [(2, 8, 256, 64, 0, [90], -2), (1, 8, 64, 32, 0, [], 127)]
    cls = rng.integers(0, 2, n)
    pb = np.array([c[0] for c in classes])[cls]
    xy = np.stack([rng.integers(0, (32 << pb) + 1), rng.integers(0, (24 << pb) + 1)], 1)
    major = rng.integers(-16, 48, n)
    minor = np.maximum(np.where(rng.random(n) < 0.15, major, major - rng.integers(0, 40, n)),
                       -24)
    qcs = [_quant_class(c) for c in classes]
    levels = np.array([qcs[k].angle_levels([[a, b]])[0]
                       for k, a, b in zip(cls, major, minor, strict=True)])
    rot = rng.integers(0, levels)
    col = rng.integers(-20, 90, (n, 3))
    out["angles_rgb_32x24_60"] = qg_from_lists(32, 24, 3, xy, np.stack([major, minor], 1),
                                               rot, col, classes=classes, cls=cls)
    out["waves_rgb_40x32_56"] = waves_vector(np.random.default_rng(20261207))
    # 7: profile gaussianimage (fixed-length body), 7 RGB Gaussians, 8-entry codebooks
    n = 7
    out["gi_rgb_12x8_7"] = GIGaussians(
        12, 8, 3,
        xy_half=rng.uniform(-1, 1, (n, 2)).astype(np.float16).view(np.uint16),
        chol_q=rng.integers(0, 64, (n, 3)).astype(np.uint8),
        chol_min=np.array([0.5, -2.0, 0.5], np.float32),
        chol_max=np.array([4.0, 2.0, 3.0], np.float32),
        codebooks=rng.uniform(-0.5, 1.0, (2, 8, 3)).astype(np.float16).view(np.uint16),
        color_idx=rng.integers(0, 8, (n, 2)).astype(np.uint8))
    return out


def waves_vector(rng) -> QuantizedGaussians:
    """9: waves (version 5), 40x32 RGB, 56 Gaussians in four classes: class 0 (three colour
    buckets, angle levels from rot_bias -4) and class 1 with waves of different steps
    (F 12 / 3, f0 -2 / 4, P 16 / 7, wave_den 32 / 5), amplitudes up to 4 wave_den, both
    axes; class 2 without waves (wave_den 0); class 3 with wave steps at the ends of their
    ranges (F 32, f0 -32, P 64) but no Gaussian with a wave (m = 0). Gaussian 0 is
    isotropic with a wave along the minor axis, Gaussian 1 isotropic along the major."""
    n = 56
    classes = [(2, 16, 128, 48, 0, [64, 90], -4, 32, 12, -2, 16),
               (1, 8, 64, 32, -1, [], 10, 5, 3, 4, 7),
               (2, 8, 32, 64, 0, [], 127, 0, 1, 0, 1),
               (3, 16, 256, 100, 0, [], 0, 20, 32, -32, 64)]
    qcs = [_quant_class(c) for c in classes]
    cls = np.concatenate([[0, 1], rng.integers(0, 4, n - 2)])
    pb = np.array([c[0] for c in classes])[cls]
    ss = np.array([c[1] for c in classes])[cls]
    xy = np.stack([rng.integers(0, (40 << pb) + 1), rng.integers(0, (32 << pb) + 1)], 1)
    major = rng.integers(-ss, 3 * ss)
    minor = np.maximum(np.where(rng.random(n) < 0.2, major, major - rng.integers(0, 2 * ss)),
                       -3 * ss)
    minor[:2] = major[:2]
    ls = np.stack([major, minor], 1)
    levels = np.array([qcs[k].angle_levels([row])[0] for k, row in zip(cls, ls, strict=True)])
    rot = rng.integers(0, levels)
    den = np.array([np.array(qcs[k].dens())[qcs[k].bucket([row])[0]]
                    for k, row in zip(cls, ls, strict=True)])
    col = (rng.random((n, 3)) * 0.5 * den[:, None]).astype(np.int64)
    wden = np.array([qcs[k].wave_den for k in cls])
    amp = np.where((rng.random(n) < 0.7) & (cls != 3),
                   rng.integers(1, 4 * np.maximum(wden, 1) + 1), 0) * (wden > 0)
    amp[:2] = [wden[0] * 2, wden[1] * 4]
    freq = rng.integers(0, np.array([qcs[k].wave_freqs for k in cls]))
    phase = rng.integers(0, np.array([qcs[k].wave_phases for k in cls]))
    axis = rng.integers(0, 2, n)
    axis[:2] = [1, 0]
    on = amp > 0
    wave = np.stack([amp, np.where(on, axis, 0), np.where(on, freq, 0),
                     np.where(on, phase, 0)], 1)
    return qg_from_lists(40, 32, 3, xy, ls, rot, col, classes=classes, cls=cls, wave=wave)


GI_FIELDS = ("xy_half", "chol_q", "chol_min", "chol_max", "codebooks", "color_idx")


def to_json(data: bytes) -> dict:
    q = gsi.read(data)
    hdr = gsi.read_header(data)
    if hdr["profile"] == "gaussianimage":
        header = {k: hdr[k] for k in ("version", "profile", "channels", "flags", "width",
                                      "height", "count")}
        means, chol, colors = q.dequantize()
        return {"header": header, "file_bytes": len(data),
                "fields": {f: getattr(q, f).tolist() for f in GI_FIELDS},
                "means": means.tolist(), "L": chol.tolist(), "colors": colors.tolist()}
    header = {k: hdr[k] for k in ("version", "profile", "channels", "flags", "width", "height",
                                  "count")}
    header["classes"] = [_class_json(c, hdr["version"]) for c in hdr["classes"]]
    header["class_counts"] = hdr["class_counts"]
    return {
        "header": header,
        "section_bytes": [length for _, _, length in hdr["sections"]],
        "file_bytes": len(data),
        "x": q.pos[:, 0].tolist(), "y": q.pos[:, 1].tolist(),
        "major": q.scale[:, 0].tolist(), "minor": q.scale[:, 1].tolist(),
        "rot": q.rot.tolist(), "color": q.color.tolist(), "cls": q.cls.tolist(),
        **({p: q.wave[:, j].tolist() for j, p in enumerate(WAVE_PARTS)}
           if hdr["version"] >= 5 else {}),
    }


def from_json(j: dict):
    h = j["header"]
    if h.get("profile") == "gaussianimage":
        dt = {"xy_half": np.uint16, "chol_q": np.uint8, "chol_min": np.float32,
              "chol_max": np.float32, "codebooks": np.uint16, "color_idx": np.uint8}
        f = j["fields"]
        return GIGaussians(h["width"], h["height"], h["channels"],
                           **{k: np.array(f[k], dtype=dt[k]).reshape(np.shape(f[k]))
                              for k in GI_FIELDS})
    return qg_from_lists(h["width"], h["height"], h["channels"],
                         list(zip(j["x"], j["y"], strict=True)),
                         list(zip(j["major"], j["minor"], strict=True)),
                         j["rot"], j["color"], masked=bool(h["flags"] & 1),
                         classes=h["classes"], cls=j["cls"],
                         wave=(list(zip(*(j[p] for p in WAVE_PARTS), strict=True))
                               if "amp" in j else None))


def main():
    for name, qg in vectors().items():
        data = gsi.write(qg)
        (HERE / f"{name}.gsi").write_bytes(data)
        (HERE / f"{name}.json").write_text(json.dumps(to_json(data), indent=1) + "\n")
        print(f"{name}: {len(data)} bytes, {qg.count} Gaussians")


if __name__ == "__main__":
    main()
