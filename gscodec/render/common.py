"""Constants shared by every rendering backend (see the contract in gscodec.render)."""

Q_CUT = 12.0
"""A Gaussian contributes to a pixel iff q <= Q_CUT (q = squared Mahalanobis distance)."""
