"""Constants and the strip loop shared by every rendering backend (see the contract in
gscodec.render and spec/gsi-format.md section 10)."""

Q_CUT = 12.0
"""A Gaussian contributes to a pixel iff q <= Q_CUT (q = squared Mahalanobis distance)."""

STRIP_ROWS = 512
"""Rows per strip. The decoder renders a window strip by strip, each strip with its own
origin (spec section 10.1, so the value is part of the exact decoding rule), and the Triton
backend bins strip by strip: the memory of a render then stays bounded by the strip."""


def strips(height: int, rows: int = STRIP_ROWS):
    """(row0, rows) of the horizontal strips of an image `height` rows tall: the one strip
    loop of the decoder and of the backends."""
    rows = int(rows)
    if rows < 1:
        raise ValueError(f"strip height must be >= 1, got {rows}")
    for row0 in range(0, int(height), rows):
        yield row0, min(rows, int(height) - row0)
