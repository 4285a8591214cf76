"""Constants shared by every rendering backend (see the contract in gscodec.render)."""

Q_CUT = 12.0
"""A Gaussian contributes to a pixel iff q <= Q_CUT (q = squared Mahalanobis distance)."""


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
            "them with the numpy renderer (render_numpy) or the torch backend 'reference'")
