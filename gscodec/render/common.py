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


def waves_active(waves) -> bool:
    """Whether `waves` [N, 4] (numpy or torch; None: no waves) change the image, i.e. some
    amplitude is non-zero, or ask for gradients (a fit starts its waves at amplitude 0).
    Backends that do not draw waves refuse exactly these (`refuse_waves`)."""
    if waves is None:
        return False
    if getattr(waves, "requires_grad", False):
        return True
    return bool((waves[:, 3] != 0).any())


def refuse_waves(waves, backend: str) -> None:
    """NotImplementedError for a backend that does not draw waves yet, if they matter."""
    if waves_active(waves):
        raise NotImplementedError(
            f"render backend {backend!r} does not draw waves yet (format version 5): render "
            "them with the backends 'numpy_reference' (decoding) or 'torch_reference'")
