"""Rate-distortion plots (matplotlib, Agg backend, PNG) from CompressAI-schema JSON files."""
from __future__ import annotations

import json
import math
from pathlib import Path

METRIC_KEYS = {"psnr": ("psnr-rgb", "PSNR (RGB) [dB]"),
               "ms-ssim": ("ms-ssim-rgb", "MS-SSIM (RGB) [dB]")}


def load_results(src) -> dict:
    """A results dict from a path or a dict (CompressAI schema)."""
    if isinstance(src, dict):
        return src
    with open(src) as f:
        return json.load(f)


def _series(res: dict, key: str):
    r = res.get("results", {})
    bpp, val = r.get("bpp"), r.get(key)
    if not bpp or not val or len(bpp) != len(val):
        return None
    pts = [(float(b), float(v)) for b, v in zip(bpp, val, strict=False)
           if b is not None and v is not None
           and math.isfinite(float(b)) and math.isfinite(float(v))]
    if not pts:
        return None
    pts.sort()
    xs, ys = zip(*pts, strict=False)
    if key == "ms-ssim-rgb":
        ys = tuple(-10.0 * math.log10(max(1e-12, 1.0 - y)) for y in ys)
    return list(xs), list(ys)


def _draw(ax, measured, anchors, key, ylabel, max_bpp):
    """Draw the curves of one metric on ``ax``; returns (curves drawn, largest measured bpp)."""
    drawn = 0
    xmax = 0.0
    for src in measured:
        res = load_results(src)
        s = _series(res, key)
        if s is None:
            continue
        ours = res.get("codec") == "gsi" or str(res.get("name", "")).lower().startswith("gsi")
        # gsi in solid black; our other rows in black too: gsi-ssim dotted, the other
        # profiles (gsi-gi) dash-dotted.
        main = ours and res.get("codec", "gsi") == "gsi"
        other = ":" if res.get("codec") == "gsi-ssim" else "-."
        ax.plot(s[0], s[1], marker="o" if main or not ours else "s", ms=4,
                lw=2.4 if main else 1.8 if ours else 1.5, ls="-" if main or not ours else other,
                color="black" if ours else None, label=res.get("name", "?"),
                zorder=3 if ours else 2)
        xmax = max(xmax, max(s[0]))
        drawn += 1
    for src in anchors:
        res = load_results(src)
        s = _series(res, key)
        if s is None:
            continue
        if max_bpp is not None:
            keep = [(x, y) for x, y in zip(*s, strict=False) if x <= max_bpp * 1.05]
            if len(keep) < 1:
                continue
            s = [list(t) for t in zip(*keep, strict=False)]
        ax.plot(s[0], s[1], ls="--", lw=1.1, marker=".", ms=3, alpha=0.8,
                label=f"{res.get('name', '?')} (published)")
        drawn += 1
    if drawn:
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        if xmax > 0:
            ax.set_xlim(0, xmax * 1.05 if max_bpp is None else max_bpp * 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return drawn, xmax


def plot_rd(out_png, measured, anchors=(), *, metric="psnr", title=None, max_bpp=None):
    """Draw one RD plot.  ``measured``: results (paths or dicts) drawn solid with markers;
    ``anchors``: published results drawn dashed, labelled "(published)".
    Returns the PNG path, or None when there was nothing to draw."""
    return plot_rd_panels(out_png, measured, anchors, metrics=(metric,), title=title,
                          max_bpp=max_bpp)


def plot_rd_panels(out_png, measured, anchors=(), *, metrics=("psnr", "ms-ssim"), title=None,
                   max_bpp=None):
    """One PNG with a panel per metric (side by side), e.g. PSNR and MS-SSIM against bpp.
    A panel with no data says so.  Returns the PNG path, or None when nothing was drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured, anchors = list(measured), list(anchors)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.5 * len(metrics), 5.5), dpi=110,
                             squeeze=False)
    total = 0
    for ax, metric in zip(axes[0], metrics, strict=False):
        key, ylabel = METRIC_KEYS[metric]
        drawn, _ = _draw(ax, measured, anchors, key, ylabel, max_bpp)
        total += drawn
        if drawn:
            ax.set_title(ylabel.split(" [")[0] if len(metrics) > 1 or title
                         else f"Rate-distortion, {ylabel.split(' [')[0]}")
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {ylabel.split(' [')[0]} data", ha="center", va="center",
                    transform=ax.transAxes)
    if not total:
        plt.close(fig)
        return None
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
