"""The decoder's view of a rendering: scaling and cropping (float32, spec section 10.1),
the strip-by-strip window render of the CPU backends, and the 8-bit rule (spec 10.4).
numpy only; the torch variants import torch when called."""
from __future__ import annotations

import numpy as np

from .common import strips


def to_uint8(img):
    """The spec's 8-bit rule: v -> clamp(floor(v*255 + 0.5), 0, 255), computed in float32
    (v is first converted to float32; v*255 and +0.5 are each rounded to float32).
    NaN maps to 0. Returns a uint8 tensor of the same shape."""
    import torch
    v = torch.as_tensor(img).to(torch.float32)
    v = torch.floor(v * 255.0 + 0.5)
    v = torch.nan_to_num(v, nan=0.0).clamp_(0.0, 255.0)
    return v.to(torch.uint8)


def to_uint8_numpy(img) -> np.ndarray:
    """`to_uint8` for numpy arrays (same rule, same results): a uint8 array. In place on
    one float32 buffer: a quarter of a Kodak decode's time went to the temporaries."""
    v = np.multiply(img, np.float32(255.0), dtype=np.float32)
    v += np.float32(0.5)
    np.floor(v, out=v)
    np.maximum(v, np.float32(0.0), out=v)          # NaN passes through both ...
    np.minimum(v, np.float32(255.0), out=v)
    v[np.isnan(v)] = 0.0                           # ... and maps to 0 here
    return v.astype(np.uint8)


def transform_for_view(means, conics, scale: float = 1.0, offset=(0.0, 0.0), waves=None):
    """Gaussians as seen in a scaled and cropped view: means*scale - offset and
    conics/scale^2 (offset = (x0, y0) of the crop's top-left corner, in output pixels).
    In the arrays' dtype: for float32, means*float32(scale) and conics/float32(scale^2),
    each rounded once (spec 10.1). Returns (means, conics) as new tensors (or numpy arrays,
    for numpy inputs) of the same dtype; with `waves`, (means, conics,
    waves_for_view(waves, scale))."""
    s = float(scale)
    if not s > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if isinstance(means, np.ndarray):
        off = np.asarray([float(offset[0]), float(offset[1])], dtype=means.dtype)
        view = means * means.dtype.type(s) - off, conics / conics.dtype.type(s * s)
    else:
        import torch
        off = torch.as_tensor([float(offset[0]), float(offset[1])], dtype=means.dtype,
                              device=means.device)
        view = means * s - off, conics / (s * s)
    return view if waves is None else (*view, waves_for_view(waves, s))


def waves_for_view(waves, scale: float = 1.0):
    """Waves [N, 4] (kx, ky, phase, amp; format v5) in a view at `scale` (None stays
    None): the wave vector divided by the scale in the waves' dtype (float32: kx / f32(s),
    ky / f32(s), each rounded once; spec 10.1), phase and amp unchanged. d is measured
    from the mean, so a crop's or a strip's origin changes nothing."""
    if waves is None:
        return None
    s = float(scale)
    if isinstance(waves, np.ndarray):
        out = waves.copy()
        out[:, :2] /= waves.dtype.type(s)
        return out
    import torch
    return torch.cat([waves[:, :2] / s, waves[:, 2:]], dim=1)


def window_by_strips(render_strip, means: np.ndarray, x0: int, y0: int, width: int,
                     height: int, channels: int) -> np.ndarray:
    """uint8 [height, width, channels] of the window at (x0, y0): for each strip (row0,
    rows) the Gaussians are moved to the strip's origin in float32, means - (x0, y0 + row0)
    (spec 10.1), and render_strip(shifted_means, rows) gives the strip's uint8 pixels."""
    out = np.empty((height, width, channels), dtype=np.uint8)
    for row0, rows in strips(height):
        origin = np.array([x0, y0 + row0], dtype=np.float32)
        out[row0:row0 + rows] = render_strip(means - origin, rows)
    return out
