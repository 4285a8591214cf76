"""Inpainting, an application on top of the codec: `inpaint(image, mask)` fills the
pixels under a mask, by a local lattice fit (`lattice.py`) or by a whole-image masked
encode (`gscodec.encoder.masked`) and its ordinary decode."""
from __future__ import annotations

import numpy as np

from .lattice import inpaint_gaussians
from .texture import add_texture

# Inpainting defaults (chosen on Kodak with LaMa-style masks: benchmarks/inpaint.py).
INPAINT_DENSITY = 4.0        # Gaussians per 1000 pixels
INPAINT_ITERATIONS = 0       # 0: least-squares start and final colour solve only

__all__ = ["inpaint", "inpaint_gaussians", "INPAINT_DENSITY", "INPAINT_ITERATIONS"]


def inpaint(image, mask, *, keep_known: bool = True, texture: bool = False,
            **encode_options) -> np.ndarray:
    """Fill the pixels of `image` marked by `mask` (HxW, nonzero = missing).

    keep_known=True (default): a local masked fit. The hole is given an edge-directed
    interpolant of the known pixels as a prior (`encoder.hole_prior.anisotropic_fill`:
    edges carried across the hole, colour regions of the border kept apart deep inside
    instead of averaged; the pixels under the mask are never read),
    Gaussians are laid on lattices over the hole and a ring of known pixels around it
    (fine next to the border, coarser deep inside), their colours are solved by least
    squares, and the hole is filled by rendering those Gaussians (the decoder's renderer,
    on the .gsi quantization grid); known pixels are kept. `gaussians` (optional) is an
    approximate budget for those local Gaussians.

    texture=True (local fit only): exemplar detail from the known part of the image is laid
    over the smooth fill in the hole (texture.py), for large holes in grass, foliage or
    fabric; the smooth fill alone scores the higher PSNR.

    keep_known=False, or iterations > 0: a whole-image masked encode
    (gscodec.encode(image, mask=mask, **encode_options), defaults INPAINT_DENSITY Gaussians
    per 1000 pixels and INPAINT_ITERATIONS iterations) and its plain decode.

    Returns uint8 HxWxC (HxW for grayscale input)."""
    from ..decoder import decode, render_gaussians
    from ..encoder.api import default_gaussians, encode
    from ..errors import InputError
    from ..imageio import check_count, load_image, load_mask
    arr = load_image(image)
    h, w, c = arr.shape
    missing = load_mask(mask, h, w)
    local = keep_known and not encode_options.get("iterations")
    if texture and not local:
        raise InputError("texture needs the local fit (keep the known pixels, no iterations)")
    if local:
        gaussians = encode_options.get("gaussians")
        if gaussians is not None:
            gaussians = check_count("gaussians", gaussians, 1)
        qg = inpaint_gaussians(arr, missing, gaussians=gaussians)
        rows = np.flatnonzero(missing.any(1))
        cols = np.flatnonzero(missing.any(0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = render_gaussians(qg, crop=(x0, y0, x1 - x0, y1 - y0)).reshape(y1 - y0, x1 - x0, c)
        out = arr.copy()
        sub = out[y0:y1, x0:x1]
        hm = missing[y0:y1, x0:x1]
        sub[hm] = crop[hm]
        if texture:
            out = add_texture(arr, missing, out)
        return out[:, :, 0] if c == 1 else out
    if encode_options.get("gaussians") is None:
        encode_options["gaussians"] = default_gaussians(h, w, INPAINT_DENSITY)
    if encode_options.get("iterations") is None:
        encode_options["iterations"] = INPAINT_ITERATIONS
    data = encode(arr, mask=missing, **encode_options)
    out = decode(data, device=encode_options.get("device", "auto"))
    out = out.reshape(h, w, c).copy()
    if keep_known:
        out[~missing] = arr[~missing]
    return out[:, :, 0] if c == 1 else out
