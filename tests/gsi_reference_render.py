"""Independent renderer of decoded .gsi Gaussians, written from spec/gsi-format.md section 10
(and profile-gaussianimage.md section 4) alone: the pixels a decoder must produce.

numpy only, no gscodec imports; it takes the output of gsi_reference_decoder.decode(). Each
binary32 operation of the spec is one numpy float32 operation (numpy never fuses), the
binary64 ones numpy float64 operations, in the spec's order; Gaussians are visited one at
a time in index order, each over its candidate rows as arrays.

render(decoded, scale=1.0, crop=None, rows=None) -> uint8 [h, w, C] (C = 1 included);
rows: only these window rows are rendered (the others stay 0), for the 16384x16384 vectors.
waves(decoded) -> the binary32 waves [N, 4] (spec 9 and 10.1; version 5), drawn by
render_strip with cos_gsi (spec 10.3, "Waves").
"""
import math

import numpy as np

F = np.float32
Q = 12.0
STRIP = 512


def f32bits(u):
    return np.array([u], dtype=np.uint32).view(np.float32)[0]


L2E, MAGIC = f32bits(0x3FB8AA3B), f32bits(0x4B400000)
LN2_H, LN2_L = f32bits(0x3F317200), f32bits(0x35BFBE8E)
POLY = [f32bits(0x39500D01), f32bits(0x3AB60B61), f32bits(0x3C088889), f32bits(0x3D2AAAAB),
        f32bits(0x3E2AAAAB), F(0.5), F(1.0), F(1.0)]


def fast_exp(x):
    """spec 10.3, float32 array in and out."""
    x = np.where(x < F(-87), F(-87), x).astype(F)
    x = np.where(x > F(87), F(87), x).astype(F)
    t = x * L2E
    n = (t + MAGIC) - MAGIC
    r = x - n * LN2_H
    r = r - n * LN2_L
    p = np.full_like(r, POLY[0])
    for coef in POLY[1:]:
        p = p * r + coef
    two_n = ((np.nan_to_num(n).astype(np.int32) + 127) << 23).view(np.float32)
    return p * two_n


IPI, PH, PL = f32bits(0x3EA2F983), f32bits(0x40490000), f32bits(0x3A7DAA22)
COS_C = [F(1.0), F(-0.5)] + [f32bits(u) for u in (0x3D2AAAAB, 0xBAB60B61, 0x37D00D01,
                                                  0xB493F27E, 0x310F76C7)]     # C0 .. C6
X_MAX = F(4194304.0)


def cos_gsi(x):
    """spec 10.3 ("Waves"), float32 array in and out."""
    x = np.where(x < -X_MAX, -X_MAX, x).astype(F)
    x = np.where(x > X_MAX, X_MAX, x).astype(F)
    t = x * IPI
    n = (t + MAGIC) - MAGIC
    r = x - n * PH
    r = r - n * PL
    r2 = r * r
    p = np.full_like(r, COS_C[6])
    for j in (5, 4, 3, 2, 1, 0):
        p = p * r2 + COS_C[j]
    odd = np.nan_to_num(n).astype(np.int64) % 2 == 1
    return np.where(odd, -p, p).astype(F)


def waves(d):
    """spec 9 and 10.1: each Gaussian's wave (kx, ky, phase, amp), binary32 rounded once
    from binary64, [N, 4]; zeros for Gaussians without one (and before version 5)."""
    if d["profile"] == 1:
        return np.zeros((len(d["gaussianimage"][0]), 4), dtype=F)
    out = np.zeros((len(d["x"]), 4))
    for i, k in enumerate(d["cls"]):
        amp = d["amp"][i]
        if amp == 0:
            continue
        ss = d["classes"][k][1]
        wave_den, _, f0, P = d["classes"][k][7:11]
        t = (np.pi * d["rot"][i]) / d["levels"][i]
        omega = np.exp2((f0 + d["freq"][i]) / 2)
        if d["axis"][i] == 0:
            u, s = (np.cos(t), np.sin(t)), np.exp2(d["major"][i] / ss)
        else:
            u, s = (-np.sin(t), np.cos(t)), np.exp2(d["minor"][i] / ss)
        out[i] = ((omega / s) * u[0], (omega / s) * u[1], ((2 * np.pi) * d["phase"][i]) / P,
                  amp / wave_den)
    return out.astype(F)


def gaussians(d):
    """spec 10.1: (means [N, 2], conics [N, 3], colours [N, C]) binary32, in index order."""
    if d["profile"] == 1:
        means, chol, cols = d["gaussianimage"]
        m = np.array(means, dtype=np.float64).reshape(-1, 2)
        L = np.array(chol, dtype=np.float64).reshape(-1, 3)
        q = np.zeros((len(L), 3))
        with np.errstate(all="ignore"):
            for i, (l11, l21, l22) in enumerate(L.tolist()):
                if l11 * l22 == 0:
                    continue
                t = 1 / (l22 * l22)                         # profile-gaussianimage.md 4
                conic = ((l21 * l21 + l22 * l22) / (l11 * l11) * t, -(l21 / l11) * t, t)
                if all(math.isfinite(v) and abs(v) <= float(np.finfo(F).max) for v in conic):
                    q[i] = conic
        return m.astype(F), q.astype(F), np.array(cols, dtype=np.float64).astype(F)
    n = len(d["x"])
    cls = d["classes"]
    pb = np.array([cls[k][0] for k in d["cls"]], dtype=np.float64)
    ss = np.array([cls[k][1] for k in d["cls"]], dtype=np.float64)

    def den(k, b):
        return cls[k][3] if b == 0 else cls[k][5][b - 1]
    dens = np.array([den(k, b) for k, b in zip(d["cls"], d["bucket"], strict=True)],
                    dtype=np.float64)
    m = np.stack([np.array(d["x"], dtype=np.float64) / np.exp2(pb),
                  np.array(d["y"], dtype=np.float64) / np.exp2(pb)], -1).reshape(n, 2)
    s1 = np.exp2(np.array(d["major"], dtype=np.float64) / ss)
    s2 = np.exp2(np.array(d["minor"], dtype=np.float64) / ss)
    t = (np.pi * np.array(d["rot"], dtype=np.float64)) / np.array(d["levels"], dtype=np.float64)
    co, si = np.cos(t), np.sin(t)
    i1, i2 = 1 / (s1 * s1), 1 / (s2 * s2)
    q = np.stack([(co * co) * i1 + (si * si) * i2, (co * si) * (i1 - i2),
                  (si * si) * i1 + (co * co) * i2], -1).reshape(n, 3)
    col = np.array(d["color"], dtype=np.float64).reshape(n, -1) / dens[:, None]
    return m.astype(F), q.astype(F), col.astype(F)


def output_size(d, scale):
    w = max(1, math.floor(d["width"] * scale + 0.5))
    h = max(1, math.floor(d["height"] * scale + 0.5))
    return w, h


def render(d, scale=1.0, crop=None, rows=None):
    """The decoded window's bytes, uint8 [h, w, C] (spec 10)."""
    m, q, col = gaussians(d)
    S, S2 = F(scale), F(scale * scale)
    M = m * S                                             # spec 10.1: scale
    qs = q / S2
    wv = waves(d)
    wv[:, :2] = wv[:, :2] / S
    ow, oh = output_size(d, scale)
    x0, y0, w, h = crop if crop is not None else (0, 0, ow, oh)
    out = np.zeros((h, w, col.shape[1]), dtype=np.uint8)
    want = set(range(h)) if rows is None else set(rows)
    for r0 in range(0, h, STRIP):
        hs = min(STRIP, h - r0)
        strip_rows = sorted(i - r0 for i in want if r0 <= i < r0 + hs)
        if not strip_rows:
            continue
        ms = M - np.array([x0, y0 + r0], dtype=F)         # the strip's frame
        v = render_strip(ms, qs, col, hs, w, strip_rows, wv)
        out[r0:r0 + hs] = to_u8(v)
    return out


def render_strip(ms, qs, col, hs, w, rows, wv=None):
    """spec 10.2-10.4 for one strip: float32 sums [hs, w, C] on the listed rows (wv: the
    scaled waves [N, 4], or None)."""
    v = np.zeros((hs, w, col.shape[1]), dtype=F)
    rows = np.array(rows)
    jc = np.arange(w, dtype=F) + F(0.5)                   # column centres, exact
    with np.errstate(all="ignore"):
        for k in range(ms.shape[0]):
            mx, my = ms[k]
            a, b, c = qs[k]
            vals = (mx, my, a, b, c)
            if not all(np.isfinite(x) for x in vals) or not (a > 0 and a * c - b * b > 0):
                continue                                  # 10.2.1 (float32 scalars)
            wave = None if wv is None or wv[k, 3] == 0 else wv[k]
            if wave is not None and not np.isfinite(wave).all():
                continue                                  # 10.2.1: a wave, not finite
            A, B, Cc, X, Y = (float(x) for x in (a, b, c, mx, my))
            det = A * Cc - B * B
            rx = math.sqrt((Q * Cc) / det) if det > 0 else math.inf
            ry = math.sqrt((Q * A) / det) if det > 0 else math.inf
            xlo, xhi = math.floor((X - rx) - 0.5) - 1, math.ceil((X + rx) - 0.5) + 1
            ylo, yhi = math.floor((Y - ry) - 0.5) - 1, math.ceil((Y + ry) - 0.5) + 1
            if not (xhi >= 0 and xlo <= w - 1 and yhi >= 0 and ylo <= hs - 1):
                continue                                  # 10.2.2
            ii = rows[(rows >= ylo) & (rows <= yhi)]      # 10.2.3
            if ii.size == 0:
                continue
            dy = ((ii.astype(F) + F(0.5)) - my)[:, None]  # [r, 1] float32
            D = dy.astype(np.float64)
            disc = (A * Q) - ((det * D) * D)
            disc = np.where(disc > 0, disc, 0.0)
            half = np.sqrt(disc) / A
            xc = X - ((B * D) / A)
            lo, hi = np.floor((xc - half) - 0.5) - 1, np.ceil((xc + half) - 0.5) + 1
            j = np.arange(w, dtype=np.float64)[None, :]
            cand = (j >= lo) & (j <= hi)                  # 10.2.4
            dx = (jc - mx)[None, :]                       # 10.3
            qq = ((a * dx + (F(2) * b) * dy) * dx) + ((c * dy) * dy)
            wt = np.where(qq <= F(Q), fast_exp(F(-0.5) * qq), F(0)).astype(F)
            if wave is not None:                          # 10.3, "Waves"
                kx, ky, phase, amp = wave
                arg = ((kx * dx) + (ky * dy)) + phase
                t = F(1) + amp * cos_gsi(arg)
                wt = np.where(qq <= F(Q), wt * t, F(0)).astype(F)
            for ch in range(col.shape[1]):                # 10.4, index order
                term = wt * col[k, ch]
                v[ii, :, ch] = np.where(cand, v[ii, :, ch] + term, v[ii, :, ch])
    return v


def to_u8(v):
    """spec 10.4: clamp(floor(f32(f32(v * 255) + 0.5)), 0, 255), NaN -> 0."""
    t = np.floor((v * F(255)) + F(0.5))
    t = np.where(np.isnan(t), F(0), t)
    return np.clip(t, 0, 255).astype(np.uint8)
