"""torch's thread count for the encoder's own tensor operations.

The fit's arithmetic (Adam, the conics and their chain rule, clamps, selections) works on
tensors of a few thousand numbers. torch runs some of those operations (sqrt, exp, cos,
indexing, ...) in a parallel region once a tensor has some 2048 elements; waking a second
thread then costs more than the work, and far more on a loaded machine, where the sleeping
thread waits for a core (Fitting, 2026-12-06, issue 30: sqrt + cos of 2359 x 3 numbers took
37 us at one thread and 30 ms at two on the loaded VM). So the encode runs torch at one
thread and the compiled kernel, which does the work, at the thread count torch had
(`kernel_torch.kernel_threads_kept`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """torch at one thread inside the block (its count restored after); the CPU kernel's
    calls keep the count torch had on entry."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    from ..render.kernel_torch import kernel_threads_kept
    with kernel_threads_kept():
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)
