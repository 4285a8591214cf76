"""Exceptions raised by gscodec.

Every error a user can cause (bad file, bad image, bad option) is one of these, so the
CLI can print a one-line message and exit non-zero without a traceback.
"""


class GscodecError(Exception):
    """Base class of every error gscodec raises on purpose."""


class FormatError(GscodecError):
    """A .gsi byte stream is truncated, corrupted or otherwise not a valid file."""


class InputError(GscodecError, ValueError):
    """An input image, mask or option cannot be used (unreadable file, wrong size, bad value)."""
