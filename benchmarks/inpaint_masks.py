"""LaMa-style random masks (thin / medium / thick), generated in code.

A reimplementation of the random mask generator described with LaMa (Suvorov et al.,
"Resolution-robust Large Mask Inpainting with Fourier Convolutions", WACV 2022) and its
512-pixel evaluation presets (random_thin_512 / random_medium_512 / random_thick_512):
polylines of random strokes (a random start, 1-5 segments with a random angle, length and
brush width) plus, for medium and thick, axis-aligned boxes with probability 0.3. Masks
covering more than 70 % of the image are redrawn. Strokes are drawn with round ends
(distance to the segment <= width / 2). Nothing is downloaded; seeds are fixed.
"""
from __future__ import annotations

import numpy as np

PRESETS = {
    "thin": dict(irregular=dict(min_times=4, max_times=50, max_width=10, max_angle=4, max_len=40),
                 box_proba=0.0, box=None),
    "medium": dict(irregular=dict(min_times=4, max_times=10, max_width=100, max_angle=4, max_len=200),
                   box_proba=0.3,
                   box=dict(margin=0, bbox_min_size=30, bbox_max_size=150, min_times=1, max_times=5)),
    "thick": dict(irregular=dict(min_times=1, max_times=5, max_width=250, max_angle=4, max_len=450),
                  box_proba=0.3,
                  box=dict(margin=10, bbox_min_size=30, bbox_max_size=300, min_times=1, max_times=4)),
}
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


def _irregular(rng, h, w, min_times, max_times, max_width, max_angle, max_len):
    mask = np.zeros((h, w), bool)
    for i in range(rng.integers(min_times, max_times + 1)):
        x, y = rng.integers(w), rng.integers(h)
        for _ in range(1 + rng.integers(5)):
            angle = 0.01 + rng.integers(max_angle)
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = 10 + rng.integers(max_len)
            brush = 5 + rng.integers(max_width)
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


def lama_mask(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    """HxW bool mask (True = missing) of the given LaMa preset, deterministic in seed."""
    cfg = PRESETS[kind]
    rng = np.random.default_rng(seed)
    while True:
        m = _irregular(rng, height, width, **cfg["irregular"])
        if cfg["box"] is not None and rng.random() < cfg["box_proba"]:
            m |= _boxes(rng, height, width, **cfg["box"])
        if 0 < m.mean() <= MAX_HOLE:
            return m
