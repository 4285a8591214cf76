"""The encoder's progress bar (tqdm): iterations, phase and current PSNR."""
from __future__ import annotations

import math
import sys


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


class Progress:
    """tqdm bar showing the phase and the current PSNR; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm
            # In a log file (not a terminal) redraw rarely, or every redraw becomes a line.
            every = 0.1 if sys.stderr.isatty() else 15.0
            self.bar = tqdm(total=total, unit="it", desc="fit", dynamic_ncols=True,
                            leave=False, mininterval=every)

    def update(self, phase: str, mse):
        """One iteration; `mse` (a float or a 0-d tensor) is read only on a redraw."""
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 10 == 0 or self.bar.n == self.bar.total:
                self.bar.set_description(phase, refresh=False)
                self.bar.set_postfix_str(f"PSNR {psnr_from_mse(float(mse)):.2f} dB", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()
