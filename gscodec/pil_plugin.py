"""Pillow plugin: PIL.Image.open("x.gsi") decodes a .gsi file at its native size."""
from __future__ import annotations

from PIL import Image, ImageFile

from .format import MAGIC, read_header

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _accept(prefix: bytes) -> bool:
    return prefix[:len(MAGIC)] == MAGIC


class GsiImageFile(ImageFile.ImageFile):
    format = "GSI"
    format_description = "Gaussian splatting image (gscodec)"

    def _open(self):
        self.fp.seek(0)
        self._gsi_data = self.fp.read()
        from .errors import FormatError
        try:
            header = read_header(self._gsi_data)
        except FormatError as exc:
            raise SyntaxError(str(exc)) from None
        self._size = (header["width"], header["height"])
        self._mode = _MODES[header["channels"]]
        self.info["gaussians"] = header["count"]
        self.tile = []

    def load(self):
        if self._im is None:
            from .codec import decode
            arr = decode(self._gsi_data)
            self.im = Image.fromarray(arr, self.mode).im
        return Image.Image.load(self)


Image.register_open(GsiImageFile.format, GsiImageFile, _accept)
Image.register_extension(GsiImageFile.format, ".gsi")
