"""gscodec: an image codec built on 2D Gaussian splatting.

    import gscodec
    data = gscodec.encode("photo.png")          # bytes of a .gsi file
    pixels = gscodec.decode(data)               # HxWxC uint8 (HxW for grayscale)
    gscodec.info(data)                          # header, sections, bpp

Decoding needs numpy, constriction and the compiled kernel only: `import gscodec` and
`gscodec.decode` never import torch. `encode` and `inpaint` load the encoder (torch) on
first use. Importing gscodec also registers a Pillow plugin (open and save .gsi).
"""
import os as _os

# torch's OpenMP threads otherwise spin for a while after each of its parallel operations,
# taking the cores from the rasterizer's own threads, which run next: a fast encode of
# kodim05 on two cores took 0.70x the time with passive waiting. It must be set before
# torch is first imported (by the encoder); a user's own setting is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .bitstream.model import QuantizedGaussians
from .decoder import decode, info, read, render_gaussians
from .errors import FormatError, GscodecError, InputError

__version__ = "0.4.0"

from . import pil_plugin as _pil_plugin  # noqa: E402,F401  (registers the Pillow plugin)


def __getattr__(name):
    # The encoder and inpainting import torch: load them when first asked for.
    if name == "encode":
        from .encoder.api import encode
        return encode
    if name == "inpaint":
        from .inpainting import inpaint
        return inpaint
    raise AttributeError(f"module 'gscodec' has no attribute {name!r}")


__all__ = ["encode", "decode", "info", "read", "render_gaussians", "inpaint", "FormatError",
           "GscodecError", "InputError", "QuantizedGaussians", "__version__"]
