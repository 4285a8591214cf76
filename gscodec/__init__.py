"""gscodec: an image codec built on 2D Gaussian splatting.

    import gscodec
    data = gscodec.encode("photo.png")          # bytes of a .gsi file
    pixels = gscodec.decode(data)               # HxWxC uint8 (HxW for grayscale)
    gscodec.info(data)                          # header, sections, bpp

Importing gscodec also registers a Pillow plugin, so PIL.Image.open("x.gsi") decodes.
"""
from .codec import decode, encode, info, read, render_gaussians
from .errors import FormatError, GscodecError, InputError
from .inpaint import inpaint
from .model import QuantizedGaussians

__version__ = "0.1.0"

from . import pil_plugin as _pil_plugin  # noqa: E402  (registers the Pillow plugin)

__all__ = ["encode", "decode", "info", "read", "render_gaussians", "inpaint", "FormatError",
           "GscodecError", "InputError", "QuantizedGaussians", "__version__"]
