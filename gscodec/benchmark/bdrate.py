"""Bjontegaard-delta rate with an explicit "is this figure meaningful" rule.

BD-rate integrates log(rate) over the *quality* axis (PSNR or MS-SSIM) on the interval
where both curves exist, so that interval is what must be large enough:

* each curve needs at least 2 valid points (finite rate > 0, finite quality);
* the quality ranges must overlap by at least ``MIN_OVERLAP`` (50 %) of the shorter of
  the two ranges; and
* each curve needs at least 2 of its own points inside the overlap interval
  (so neither curve is only extrapolated/interpolated between far-away points).

If any condition fails, the result carries ``meaningful=False`` and a reason, and no
number is printed.  The number itself comes from the ``bjontegaard`` package
(``bd_rate(..., method="akima", require_matching_points=False)``); negative means the
test codec needs fewer bits than the anchor for the same quality.
MS-SSIM is converted to dB (-10 log10(1 - MS-SSIM)) before integrating, as CompressAI does.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MIN_OVERLAP = 0.5
MIN_POINTS_IN_OVERLAP = 2
METHOD = "akima"


@dataclass
class BDResult:
    value: float | None  # percent; None when not meaningful
    meaningful: bool
    reason: str = ""
    overlap: float = 0.0  # fraction of the shorter quality range covered by both

    def format(self) -> str:
        if self.meaningful:
            return f"{self.value:+.1f} %"
        return "not meaningful"

    def as_dict(self) -> dict:
        return {"bd_rate_percent": self.value, "meaningful": self.meaningful,
                "reason": self.reason, "overlap": round(self.overlap, 4)}


def msssim_db(v):
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -10.0 * np.log10(1.0 - v)


def _clean(rate, dist):
    r = np.asarray(rate, dtype=np.float64)
    d = np.asarray(dist, dtype=np.float64)
    if r.shape != d.shape:
        raise ValueError(f"rate and distortion lengths differ: {r.shape} vs {d.shape}")
    ok = np.isfinite(r) & np.isfinite(d) & (r > 0)
    r, d = r[ok], d[ok]
    order = np.argsort(r)
    r, d = r[order], d[order]
    # Keep the upper convex-ish envelope simple: drop points whose quality does not
    # increase with rate (interpolating log-rate as a function of quality needs a function).
    keep_r, keep_d = [], []
    for ri, di in zip(r, d, strict=False):
        if keep_d and di <= keep_d[-1]:
            continue
        keep_r.append(ri)
        keep_d.append(di)
    return np.array(keep_r), np.array(keep_d)


def overlap_check(rate_a, dist_a, rate_t, dist_t):
    """Return (ok, reason, overlap_fraction) per the rule in the module docstring."""
    ra, da = _clean(rate_a, dist_a)
    rt, dt = _clean(rate_t, dist_t)
    if len(da) < 2 or len(dt) < 2:
        return False, f"too few valid points (anchor {len(da)}, test {len(dt)}; need 2 each)", 0.0
    lo, hi = max(da.min(), dt.min()), min(da.max(), dt.max())
    shorter = min(da.max() - da.min(), dt.max() - dt.min())
    frac = max(0.0, hi - lo) / shorter if shorter > 0 else 0.0
    if hi <= lo:
        return False, "quality ranges do not overlap", 0.0
    if frac < MIN_OVERLAP:
        return False, (f"quality ranges overlap by {frac:.0%} of the shorter range "
                       f"(< {MIN_OVERLAP:.0%})"), frac
    eps = 1e-9
    na = int(np.sum((da >= lo - eps) & (da <= hi + eps)))
    nt = int(np.sum((dt >= lo - eps) & (dt <= hi + eps)))
    if na < MIN_POINTS_IN_OVERLAP or nt < MIN_POINTS_IN_OVERLAP:
        return False, (f"only {na} anchor / {nt} test points inside the overlap "
                       f"(need {MIN_POINTS_IN_OVERLAP} each)"), frac
    return True, "", frac


def bd_rate(rate_anchor, dist_anchor, rate_test, dist_test, *, metric="psnr") -> BDResult:
    """BD-rate (percent) of test against anchor.  ``metric`` is "psnr" (dB, used as is)
    or "ms-ssim" (converted to dB first)."""
    if metric in ("ms-ssim", "msssim", "ms_ssim"):
        dist_anchor, dist_test = msssim_db(dist_anchor), msssim_db(dist_test)
    ok, reason, frac = overlap_check(rate_anchor, dist_anchor, rate_test, dist_test)
    if not ok:
        return BDResult(None, False, reason, frac)
    ra, da = _clean(rate_anchor, dist_anchor)
    rt, dt = _clean(rate_test, dist_test)
    try:
        import bjontegaard as bd
    except ImportError:
        return BDResult(None, False, "bjontegaard is not installed (pip install bjontegaard)", frac)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = float(bd.bd_rate(ra, da, rt, dt, method=METHOD, require_matching_points=False,
                                 min_overlap=0))
    except Exception as e:  # interpolation failures on degenerate curves
        return BDResult(None, False, f"bjontegaard failed: {e}", frac)
    if not math.isfinite(v):
        return BDResult(None, False, "non-finite BD-rate", frac)
    return BDResult(v, True, "", frac)
