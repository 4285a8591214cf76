"""Inpainting masks, generated in code: LaMa-style random masks (thin / medium / thick),
wide scribbles, object-shaped blobs and a large box.

A reimplementation of the random mask generator described with LaMa (Suvorov et al.,
"Resolution-robust Large Mask Inpainting with Fourier Convolutions", WACV 2022) and its
512-pixel evaluation presets (random_thin_512 / random_medium_512 / random_thick_512):
polylines of random strokes (a random start, 1-5 segments with a random angle, length and
brush width) plus, for medium and thick, axis-aligned boxes with probability 0.3. Masks
covering more than 70 % of the image are redrawn. Strokes are drawn with round ends
(distance to the segment <= width / 2). Nothing is downloaded; seeds are fixed.

Beyond LaMa's presets (issue 32): `scribble` (a few strokes 15-40 px wide, no boxes: a
user's brush over an object), `blob` (one or two object-shaped regions, a smooth random
outline around a centre, 4-12 % of the image) and `box` (one large box, a quarter to two
fifths of each side). Sizes are in pixels of a 512-pixel image and scale with the image's
shorter side, so the photos get holes of the same share as Kodak.
"""
from __future__ import annotations

import numpy as np

PRESETS = {
    "thin": dict(irregular=dict(min_times=4, max_times=50, max_width=10, max_angle=4,
                                max_len=40),
                 box_proba=0.0, box=None),
    "medium": dict(irregular=dict(min_times=4, max_times=10, max_width=100, max_angle=4,
                                  max_len=200),
                   box_proba=0.3,
                   box=dict(margin=0, bbox_min_size=30, bbox_max_size=150, min_times=1,
                            max_times=5)),
    "thick": dict(irregular=dict(min_times=1, max_times=5, max_width=250, max_angle=4,
                                 max_len=450),
                  box_proba=0.3,
                  box=dict(margin=10, bbox_min_size=30, bbox_max_size=300, min_times=1,
                           max_times=4)),
    "scribble": dict(irregular=dict(min_times=2, max_times=5, max_width=25, max_angle=4,
                                    max_len=200, min_width=15),
                     box_proba=0.0, box=None),
}
KINDS = ("thin", "medium", "thick", "scribble", "blob", "box")
MAX_HOLE = 0.7


def _segment(mask: np.ndarray, x0, y0, x1, y1, width: int) -> None:
    h, w = mask.shape
    r = width / 2.0
    xa, xb = int(max(0, np.floor(min(x0, x1) - r))), int(min(w, np.ceil(max(x0, x1) + r) + 1))
    ya, yb = int(max(0, np.floor(min(y0, y1) - r))), int(min(h, np.ceil(max(y0, y1) + r) + 1))
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    l2 = dx * dx + dy * dy
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / l2, 0, 1) if l2 > 0 else 0.0
    d2 = (xx - (x0 + t * dx)) ** 2 + (yy - (y0 + t * dy)) ** 2
    mask[ya:yb, xa:xb] |= d2 <= r * r


def _irregular(rng, h, w, min_times, max_times, max_width, max_angle, max_len, min_width=5,
               k=1.0):
    mask = np.zeros((h, w), bool)
    for i in range(rng.integers(min_times, max_times + 1)):
        x, y = rng.integers(w), rng.integers(h)
        for _ in range(1 + rng.integers(5)):
            angle = 0.01 + rng.integers(max_angle)
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = k * (10 + rng.integers(max_len))
            brush = k * (min_width + rng.integers(max_width))
            ex = float(np.clip(x + length * np.sin(angle), 0, w))
            ey = float(np.clip(y + length * np.cos(angle), 0, h))
            _segment(mask, x, y, ex, ey, int(brush))
            x, y = ex, ey
    return mask


def _boxes(rng, h, w, margin, bbox_min_size, bbox_max_size, min_times, max_times):
    mask = np.zeros((h, w), bool)
    bmax = min(bbox_max_size, h - 2 * margin, w - 2 * margin)
    for _ in range(rng.integers(min_times, max_times + 1)):
        bw = rng.integers(bbox_min_size, bmax)
        bh = rng.integers(bbox_min_size, bmax)
        x = rng.integers(margin, w - margin - bw + 1)
        y = rng.integers(margin, h - margin - bh + 1)
        mask[y:y + bh, x:x + bw] = True
    return mask


def _blob(rng, h, w) -> np.ndarray:
    """One or two star-shaped regions: radius r(t) = R (1 + sum_k a_k cos(k t + p_k)),
    k = 2..5, |a_k| <= 0.3 / k (a smooth outline, like an object), total area 4-12 %."""
    mask = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    count = 1 + int(rng.random() < 0.3)
    share = rng.uniform(0.04, 0.12) / count
    for _ in range(count):
        r0 = np.sqrt(share * h * w / np.pi)
        cx = rng.uniform(0.15 * w, 0.85 * w)
        cy = rng.uniform(0.15 * h, 0.85 * h)
        amp = rng.uniform(-0.3, 0.3, 4) / np.arange(2, 6)
        ph = rng.uniform(0, 2 * np.pi, 4)
        t = np.arctan2(yy - cy, xx - cx)
        terms = zip(range(2, 6), amp, ph, strict=True)
        r = r0 * (1 + sum(a * np.cos(k * t + p) for k, a, p in terms))
        mask |= np.hypot(yy - cy, xx - cx) <= r
    return mask


def _big_box(rng, h, w) -> np.ndarray:
    """One box, each side 25-40 % of the image's, at least 10 % of a side from the edges."""
    mask = np.zeros((h, w), bool)
    bh, bw = int(rng.uniform(0.25, 0.4) * h), int(rng.uniform(0.25, 0.4) * w)
    y = int(rng.integers(int(0.1 * h), h - bh - int(0.1 * h) + 1))
    x = int(rng.integers(int(0.1 * w), w - bw - int(0.1 * w) + 1))
    mask[y:y + bh, x:x + bw] = True
    return mask


def lama_mask(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    """HxW bool mask (True = missing) of the given kind (KINDS), deterministic in seed.
    thin / medium / thick are LaMa's 512-pixel presets, as they were (sizes in pixels);
    scribble scales with the image's shorter side."""
    rng = np.random.default_rng(seed)
    if kind == "blob":
        return _blob(rng, height, width)
    if kind == "box":
        return _big_box(rng, height, width)
    cfg = PRESETS[kind]
    extra = {"k": min(height, width) / 512.0} if kind == "scribble" else {}
    while True:
        m = _irregular(rng, height, width, **cfg["irregular"], **extra)
        if cfg["box"] is not None and rng.random() < cfg["box_proba"]:
            m |= _boxes(rng, height, width, **cfg["box"])
        if 0 < m.mean() <= MAX_HOLE:
            return m
