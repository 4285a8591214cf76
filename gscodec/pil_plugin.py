"""Pillow plugin: `PIL.Image.open("x.gsi")` reads the header only (size and mode); the
pixels are decoded by `load()`. `im.save("x.gsi", bpp=0.3)` (or `quality=`, `gaussians=`,
and any other keyword of `gscodec.encode`) encodes. Image.MAX_IMAGE_PIXELS applies as to
every format: Pillow checks the size from the header before anything is decoded."""
from __future__ import annotations

from PIL import Image, ImageFile

from .bitstream.format import MAGIC, PEEK_SIZE, peek
from .errors import FormatError

FORMAT = "GSI"
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# keywords of im.save(...) passed on to gscodec.encode
SAVE_OPTIONS = ("gaussians", "bpp", "quality", "iterations", "effort", "device", "seed",
                "init", "profile", "adaptive", "progress", "tune")


def _accept(prefix: bytes) -> bool:
    return prefix[:len(MAGIC)] == MAGIC


class GsiImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "Gaussian splatting image (gscodec)"

    def _open(self):
        try:
            header = peek(self.fp.read(PEEK_SIZE))
        except FormatError as exc:
            raise SyntaxError(str(exc)) from None
        self._size = (header["width"], header["height"])
        self._mode = _MODES[header["channels"]]
        self.info["gaussians"] = header["count"]
        self.tile = [ImageFile._Tile("gsi", (0, 0) + self.size, 0, None)]


class GsiDecoder(ImageFile.PyDecoder):
    """Reads the whole file from the descriptor and decodes it in one call."""
    _pulls_fd = True

    def decode(self, buffer):
        from .decoder import decode
        self.fd.seek(0)
        try:
            arr = decode(self.fd.read())
        except FormatError as exc:
            raise OSError(f"cannot decode .gsi: {exc}") from None
        self.set_as_raw(arr.tobytes())
        return -1, 0


def _save(im: Image.Image, fp, filename):
    from .encoder.api import encode
    opts = {k: v for k, v in im.encoderinfo.items() if k in SAVE_OPTIONS}
    fp.write(encode(im, **opts))


Image.register_open(FORMAT, GsiImageFile, _accept)
Image.register_decoder("gsi", GsiDecoder)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".gsi")
