"""The encoder's settings: `FitConfig` (what every stage reads, grouped by stage) and the
`--effort` presets. Each setting carries a one-line reason and a pointer to the
docs/experiments.md entry that measured it; the figures live there."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..bitstream.model import LOG2_SIGMA_MIN
from .quantize import QuantConfig


@dataclass
class FitConfig:
    iterations: int = 1500            # free-fit iterations
    # Quantization-aware (straight-through) Adam steps after the free fit. None: none for
    # the gsi profile, whose finish rounds the geometry and re-solves the colours: on 15
    # saved fits (kodim01/05/13/23, densities 2 to 24, 800 to 5000 iterations) that beat
    # the 160-step phase every time, by +0.03 to +0.20 dB at equal rate (mean +0.11), in
    # less time. The GaussianImage profile keeps a fifth of `iterations` (`gi_qat_steps`).
    qat_iterations: int | None = None
    # Progressive rounding of the gsi profile (`round_phase`): the positions are rounded
    # first and the sizes, angles and colours re-fitted by this many Adam steps (at
    # round_refit_lr times the base steps, cosine decay), then the sizes are rounded and
    # the angles and colours re-fitted as long again; `finish` then rounds the angles and
    # solves the colours. Rounding positions costs most (kodim23, density 11: 1/4-pixel
    # positions alone -0.44 dB, sizes -0.06, angles -0.04, all three -0.56 with
    # least-squares colours), and the free attributes can make up much of it: +0.31 dB at
    # equal rate on that fit with 50 steps, +0.35 with 150, kodim05 +0.08 (the file's
    # size unchanged). 0: round everything at once (the behaviour before). Dense sets get
    # more (`finish_effort`).
    round_refit_steps: int = 50
    round_refit_lr: float = 0.5
    # The colours are rounded in this many batches (a fixed random partition of the
    # Gaussians), the rest re-solved by least squares (color_round_steps CG steps) after
    # each: gain at equal rate over rounding all at once, on saved default fits after the
    # progressive rounding, 4 / 8 / 16 batches: kodim23 density 2 +0.07 / +0.08 / +0.08,
    # 11 +0.05 / +0.06 / -, 24 +0.05 / +0.06 / +0.07; kodim05 density 5 +0.01 / +0.01 /
    # +0.02 (largest or smallest Gaussians first did worse than random: +0.04 / +0.01).
    # 16 batches over 8 with 50 re-fit steps, 10 saved default fits (kodim01/05/13/23,
    # densities 2 to 24): +0.007 dB on average (+0.00 to +0.02), for 0-20 % more finish time.
    color_round_batches: int = 16
    color_round_steps: int = 8
    # The finish (re-fit steps, colour batches and their CG steps) grows with the density
    # as the free fit does (`density_scale`; at default 2x from about density 14): on those
    # 10 fits, 100 re-fit steps, 32 batches of 16 CG steps gained +0.023 dB on average
    # over 50 / 8 / 8 (+0.03 to +0.07 at densities 11 and 24, +0.00 to +0.03 at 2 and 5)
    # for 3x the finish's time: some 6 s more at density 5 on one thread, 10 s of a
    # 130 s encode at 24. 100 steps alone +0.010; 150 steps no better than 100; a re-fit
    # learning rate of 1 lost 0.011 (docs/experiments.md).
    finish_scales: bool = True
    init: str = "structure"           # "structure" or "random"
    lr_xy: float = 0.15               # pixels
    lr_log2_sigma: float = 0.02
    lr_theta: float = 0.03
    lr_color: float = 0.006
    # The free fit's Adam steps are the lr_* above times this (the quantization-aware phase
    # keeps them times its own lr_scale). At 2000 iterations (256x256 Kodak crops, 333
    # Gaussians, i.e. the density of 2000 on a Kodak image): 2 gives +0.1 dB over 1, 4
    # +0.2 dB, 8 +0.15 dB.
    lr_free_boost: float = 4.0
    # Adam's second-moment decay in the free fit. With 0.999 the early, large gradients keep
    # the steps small for ~1000 iterations; 0.9 gave +0.29 dB at 2000 iterations (kodim01
    # and kodim04, N=2000), 0.95 +0.26, 0.99 +0.17. The quantization-aware phase keeps 0.999.
    free_beta2: float = 0.9
    lr_final_fraction: float = 0.05   # cosine decay down to this fraction
    color_solve_steps: int = 12
    # Every this many free-fit iterations (up to color_solve_until of the fit) the colours
    # are re-solved by least squares for the current geometry and Adam restarts: +0.12 dB
    # over beta2 0.95 alone at 50 (the restart is most of it: solving without it gave
    # nothing); 25 and 100 did no better.
    color_solve_every: int = 50
    color_solve_until: float = 0.9
    # CG steps of those periodic re-solves (None: color_solve_steps). They start from
    # colours Adam has been fitting: 4 steps in place of 12 took 0.89x the time for
    # -0.01 dB (256x256 Kodak crops, densities 5 and 11).
    color_resolve_steps: int | None = 4
    # Densify+prune at these fractions of the free fit, each moving refine_fraction of the
    # Gaussians: six refinements gave +0.17 dB over two, fourteen +0.08.
    refine_at: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    refine_fraction: float = 0.05
    # Start the free fit with this many times the Gaussians asked for; the refinements prune
    # the excess (the least useful first), so the set is back to size after the last one.
    # 1.5 at the 800-iteration default: +0.06 to +0.14 dB at equal rate on kodim01/05/13/23
    # (density 11), +0.04 / +0.12 dB on kodim23 / kodim05 (density 6) for 1.09x / 0.98x the
    # CPU time; 1.2 gave +0.08 on average (docs/experiments.md).
    overcomplete: float = 1.5
    # Floor on each log2(sigma) while fitting (the format allows -3). Long fits shrink
    # Gaussians into sub-pixel dots that fix single pixels and break under 1/8-pixel
    # positions: kodim23 at density 24 with 2400 iterations ended with 25 % of its Gaussians
    # under 1/2 pixel on both axes and lost 0.37 dB at equal rate against 800 iterations;
    # with this floor, 2400 gained +0.51 (kodim05 +0.36). At 800 it is neutral (mean +0.00
    # to +0.06 dB at densities 2 to 24); -0.5 lost 0.15 (docs/experiments.md).
    log2_sigma_floor: float = -1.5
    # Free-fit iterations grow with the density: `iterations` up to `scale_from` Gaussians
    # per 1000 pixels, times (density / scale_from) ** iterations_exponent above it, at most
    # iterations_max_scale times (`free_steps`). A dense set needs more steps to settle. At
    # the 800-iteration default on 8 Kodak images, exponent 0.8 (1300 iterations at density
    # 11, 2400 at 24) gave +0.23 / +0.58 dB at equal rate there, every image gaining, for
    # 1.5x / 2.6x the time; 0.5 (1083 / 1600) gave +0.14 / +0.39 dB (docs/experiments.md).
    # Past 2400 it saturates: 3200 at density 24 gave +0.05 dB for 1.7x the time, so the
    # 1200-iteration default stops at 2x.
    # 0 (the FitConfig default, and any explicit --iterations): `iterations` at every density.
    iterations_exponent: float = 0.0
    scale_from: float = 6.0
    iterations_max_scale: float = 3.0
    seed: int = 0
    backend: str = "auto"
    record_every: int = 0             # >0: keep (phase, step, mse) in Fitter.history
    quant: QuantConfig = field(default_factory=QuantConfig)

    @classmethod
    def first_release(cls, **kw) -> "FitConfig":
        """The first release's fit (the old behaviour that fit_curve compares against):
        random start, base Adam steps with beta2 0.999, no refinement, no colour re-solves."""
        base = dict(init="random", lr_free_boost=1.0, free_beta2=0.999, color_solve_every=0,
                    refine_at=(), log2_sigma_floor=float(LOG2_SIGMA_MIN))
        base.update(kw)
        return cls(**base)

    def density_scale(self, n: int, npix: float) -> float:
        """How many times `iterations` the free fit of n Gaussians on npix (known) pixels
        takes: 1 up to scale_from Gaussians per 1000 pixels, then growing with the density
        (iterations_exponent), at most iterations_max_scale."""
        if self.iterations_exponent <= 0 or npix <= 0:
            return 1.0
        density = 1000.0 * n / npix
        scale = max(1.0, density / self.scale_from) ** self.iterations_exponent
        return min(self.iterations_max_scale, scale)

    def free_steps(self, n: int, npix: float) -> int:
        """Free-fit iterations for n Gaussians on npix (known) pixels."""
        return int(round(self.iterations * self.density_scale(n, npix)))

    def finish_effort(self, n: int, npix: float) -> tuple[int, int, int]:
        """(re-fit steps, colour batches, CG steps per batch) of the progressive rounding
        for n Gaussians on npix pixels: the configured ones, times density_scale when
        finish_scales."""
        s = self.density_scale(n, npix) if self.finish_scales else 1.0
        return (int(round(max(0, self.round_refit_steps) * s)),
                max(1, int(round(self.color_round_batches * s))),
                int(round(self.color_round_steps * s)))

    def qat_steps(self) -> int:
        """Quantization-aware steps of the gsi profile."""
        return self.qat_iterations if self.qat_iterations is not None else 0

    def gi_qat_steps(self) -> int:
        """Quantization-aware steps of the GaussianImage profile (its vector-quantized
        colours are fitted there): a fifth of the free fit's, at least 50."""
        if self.qat_iterations is not None:
            return self.qat_iterations
        return max(50, self.iterations // 5) if self.iterations > 0 else 0


# --effort presets: FitConfig fields (free-fit iterations; see qat_iterations for what
# follows). Chosen on the measured front of PSNR against encode time (kodim23 and
# kodim05, density 6, two threads; docs/experiments.md, 2026-11-30): plain full-size fits,
# since a coarse (half-size) start lost to fewer full-size iterations at equal time. With
# the kernel plans, the fused loss and passive OpenMP waiting, 560 iterations took 0.41x /
# 0.60x the time they did, so default went from 560 to 800 (+0.33 / +0.14 dB, 24 / 27 s)
# and fast from 300 to 250 (9 s; -0.2 dB against 300). Default also scales its iterations
# above 6 Gaussians per 1000 pixels (iterations_exponent), up to 2400. Then default went
# from 800 to 1200: twice the iterations still gained +0.16 / +0.23 dB at equal rate at
# densities 2 / 5 on 8 Kodak images, and a default encode (2-core AMD EPYC, two threads)
# took 20-23 s against 17.5 s (docs/experiments.md, 2026-12-01). `fast` skips the
# progressive rounding's re-fits: its fit is far from settled, so free iterations pay more
# (kodim23 / kodim05 at 250 iterations: 2 x 25 re-fit steps +0.13 / +0.03 dB at equal rate,
# 50 more free iterations +0.22 / +0.11; at equal time 200 + 2 x 25 lost 0.18 / 0.09).
# It rounds its colours at once too: the batches cost about 1.3 s at density 5 (two
# threads), the time of some 30 iterations there; they gave +0.01 to +0.08 dB on default
# fits (not measured at fast). `max` takes the finish that density 24 gets at
# default (100 re-fit steps, 32 colour batches of 16 CG steps) at every density.
EFFORT_PRESETS = {"fast": {"iterations": 250, "round_refit_steps": 0,
                           "color_round_batches": 1},
                  "default": {"iterations": 1200, "iterations_exponent": 0.8,
                              "iterations_max_scale": 2.0},
                  "max": {"iterations": 5000, "round_refit_steps": 100,
                          "color_round_batches": 32, "color_round_steps": 16}}
