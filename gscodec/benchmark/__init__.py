"""Rate-distortion benchmark for gscodec (``gsi bench``).

The CLI calls ``add_arguments(parser)`` on its ``bench`` sub-parser and ``run(args)``
(returns the exit code); ``main(argv)`` runs it stand-alone.
"""
from .runner import add_arguments, main, run

__all__ = ["add_arguments", "run", "main"]
