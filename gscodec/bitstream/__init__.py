"""The .gsi bitstream (spec/gsi-format.md): the container and the `gsi` profile's sections
(`format`), its entropy coding (`entropy`), the `gaussianimage` profile's fixed-length body
(`gaussianimage`) and the integer model both decode to (`model`). numpy and constriction
only."""
from .format import MAGIC, describe, read, read_header, write
from .model import QuantClass, QuantizedGaussians

__all__ = ["MAGIC", "read", "write", "read_header", "describe", "QuantizedGaussians",
           "QuantClass"]
