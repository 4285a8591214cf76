"""The encoder's settings: `FitConfig` (what every stage reads, grouped by stage) and the
`--effort` presets. Each setting carries a one-line reason and a pointer to the
docs/experiments.md entry that measured it; the figures live there."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..bitstream.model import LOG2_SIGMA_MIN
from .quantize import QuantConfig


@dataclass
class FitConfig:
    """Every setting of a fit, grouped by the stage that reads it (`stages.py`). The
    figures behind each choice are in docs/experiments.md (the entries named below); the
    comments moved from here are kept there verbatim (Fitting, 2026-12-05, issue 34)."""
    # ---- Start (and Objective.start) ----------------------------------------------------
    init: str = "structure"           # "structure" or "random"
    # Start with this many times the Gaussians asked for; the refinements prune the excess,
    # least useful first: it buys about what 25 % more iterations buy, for under 10 % of
    # the time (Fitting, 2026-11-30 (fourth session) 4ba7415).
    overcomplete: float = 1.5
    # ---- FreeFit ----------------------------------------------------------------------
    iterations: int = 1500            # free-fit iterations (the presets set them)
    # Iterations grow with the density (`density_scale`): `iterations` up to scale_from
    # Gaussians per 1000 pixels, times (density / scale_from) ** iterations_exponent above,
    # at most iterations_max_scale times; a dense set needs more steps to settle (Fitting,
    # 2026-12-01 (ninth session) 89b0c0d; saturates past 2400: (tenth session) ca39fcc).
    # 0 (here, and with any explicit --iterations): `iterations` at every density.
    iterations_exponent: float = 0.0
    scale_from: float = 6.0
    iterations_max_scale: float = 3.0
    # Base Adam steps of each attribute (pixels, log2 sigma, radians, colour).
    lr_xy: float = 0.15
    lr_log2_sigma: float = 0.02
    lr_theta: float = 0.03
    lr_color: float = 0.006
    # Waves (format v5): the fit starts every Gaussian with a wave of amplitude 0 along a
    # random axis, a random frequency in wave_start_logfreq (log2 radians per sigma) and a
    # random phase; amplitude, frequency and phase are fitted with these base steps
    # (Primitives, 2026-12-05 screen). Off: in whole encodes waves cost 5-24 % more bits
    # for the same PSNR or less (Primitives and the loss, 2026-12-06 waves in the codec).
    waves: bool = False
    lr_wave_amp: float = 0.01
    lr_wave_logfreq: float = 0.01
    lr_wave_phase: float = 0.03
    wave_start_logfreq: tuple = (-0.75, 1.6)
    # Waves that do not pay their bits are switched off at these fractions of the free fit:
    # those whose removal would raise the squared error by less than wave_keep * D / N
    # (`waves.select_waves`; Primitives, 2026-12-05).
    wave_select_at: tuple = (0.7, 0.95)
    wave_keep: float = 0.15
    # The free fit's steps are the base ones times lr_free_boost up to scale_from Gaussians
    # per 1000 pixels, then times (scale_from / density) ** boost_exponent (`free_boost`):
    # smaller Gaussians, closer together, want smaller steps. 8 with 0.5 (x5.9 at density
    # 11, x4 at 24) beat the 4 everywhere of 2026-11-21 a495b19 (Fitting, 2026-12-06
    # (eighth session)).
    lr_free_boost: float = 8.0
    boost_exponent: float = 0.5
    # Adam's second-moment decay in the free fit: with 0.999 the early, large gradients
    # keep the steps small for ~1000 iterations (Fitting, 2026-11-21 free-fit rework).
    free_beta2: float = 0.9
    lr_final_fraction: float = 0.05   # cosine decay down to this fraction
    # Every this many iterations (up to color_solve_until of the fit) least-squares colours
    # and an Adam restart; the restart is what helps (Fitting, 2026-11-21 free-fit rework).
    color_solve_every: int = 50
    color_solve_until: float = 0.9
    # CG steps of those re-solves (None: color_solve_steps): they start from colours Adam
    # has been fitting, so 4 cost less for the same fit (Fitting, 2026-11-30 (second
    # session) effort presets re-chosen).
    color_resolve_steps: int | None = 4
    # Densify and prune at these fractions of the free fit, each moving refine_fraction of
    # the Gaussians: six beat two and fourteen (Fitting, 2026-11-21 free-fit rework).
    refine_at: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    refine_fraction: float = 0.05
    # A refinement also moves every Gaussian whose removal would raise the squared error by
    # less than refine_gain_ratio times what a new Gaussian is expected to remove
    # (`refine.cheap_count`), up to refine_max_fraction of the set; 0: refine_fraction
    # only. Images with large flat areas gain most (+0.3 dB on three Kodak images at
    # density 24); ratio 0.5 did about as well, a cap of 0.3 no better (Fitting, 2026-12-06
    # (fifth session)).
    refine_gain_ratio: float = 1.0
    refine_max_fraction: float = 0.2
    # Floor on each log2(sigma) while fitting (the format allows -3): long fits otherwise
    # shrink Gaussians into dots that break under the position grid (Fitting, 2026-12-01
    # (eighth session) 1384ab5).
    log2_sigma_floor: float = -1.5
    # ---- least-squares colours (every stage that solves them) -----------------------------
    color_solve_steps: int = 12
    # ---- Quantize -----------------------------------------------------------------------
    # Quantization-aware Adam steps. None: none for the gsi profile, whose rounding finish
    # beat the 160-step phase on every saved fit (Fitting, 2026-12-01 (eighth session)
    # 1384ab5); the GaussianImage profile keeps a fifth of `iterations` (`gi_qat_steps`).
    qat_iterations: int | None = None
    quant: QuantConfig = field(default_factory=QuantConfig)   # steps and classes
    # A file below this PSNR (dB) is written again with positions one bit coarser, and the
    # better at equal rate kept (`pipeline.PositionChoice`; steps following the fit):
    # poorly fitted texture gains 0.06-0.16 dB, printed text would lose up to 0.6, so the
    # rule is a trial, not a threshold; above 28.5 dB no fit gained (Quantization,
    # 2026-12-06 (seventh session)). Tune ssim judges by MS-SSIM: +0.02 to +0.14 dB of it
    # (Primitives and the loss, 2026-12-06 (ninth session)). 0: never.
    coarse_pos_psnr: float = 28.5
    # Tune ssim: and, below coarse_pos_ms_ssim_density, below this MS-SSIM (dB, -10 log10(1 -
    # MS-SSIM)): above it (12.7 to 13.4 dB at density 11) the fine positions were always
    # kept, and the trial cost 1.2 to 1.9x the encode (Primitives and the loss, 2026-12-07).
    # At density 24 files at 12.5 and 15.9 dB kept the coarser ones with profit (+0.14 and
    # +0.07 dB; Whole-codec runs, tenth session), so there the PSNR limit alone decides.
    coarse_pos_ms_ssim: float = 11.5
    coarse_pos_ms_ssim_density: float = 16.0
    # ---- RoundGeometry ------------------------------------------------------------------
    # Positions rounded first, then sizes, each followed by this many Adam steps on the
    # attributes still free (round_refit_lr times the base steps): the free attributes make
    # up much of what rounding costs (Quantization, 2026-12-01 (eleventh session) 17b389a).
    # 0: round everything at once.
    round_refit_steps: int = 50
    round_refit_lr: float = 0.5
    # Positions go to the grid point nearest in each Gaussian's own metric
    # (`quantize.snap_positions`), not to the nearest in x and y: +0.02 to +0.06 dB at the
    # same steps, and half-pixel steps then pay (Quantization, 2026-12-06 (sixth session)).
    snap_positions: bool = True
    # The rounding finish (re-fit steps, colour batches, their CG steps) grows with the
    # density as the free fit does (Quantization, 2026-12-01 (thirteenth session) 534ecd1).
    finish_scales: bool = True
    # ---- Colours ------------------------------------------------------------------------
    # Colours rounded in this many batches (a fixed random partition), the rest re-solved
    # by color_round_steps CG steps after each: random order beat largest- or
    # smallest-first (Quantization, 2026-12-01 (eleventh session) c7c8f57; 16 batches:
    # (thirteenth session) 534ecd1).
    color_round_batches: int = 16
    color_round_steps: int = 8
    # ---- the loss of the gradient steps (`objective.SSIMObjective` for "ssim") -------------
    tune: str = "psnr"                # "psnr": squared error; "ssim": with MS-SSIM mixed in
    # tune ssim: the weight of log(1 - MS-SSIM) against log(MSE); the term from this
    # fraction of the free fit on (MS-SSIM costs more than the fused step: a later start
    # keeps the encode within about 1.5x), on the render pooled ssim_pool x ssim_pool
    # (4x4 lost half the gain), in the rounding's re-fits too; sparse terms (every k-th
    # step, random windows, a stale image-space gradient) and MS-SSIM of the luma paid
    # less (docs/experiments.md, Primitives and the loss, 2026-12-05 --tune ssim).
    ssim_weight: float = 0.8
    # tune ssim: more of the term where the set is sparse (under ssim_sparse_density
    # Gaussians per 1000 pixels): 0.9 gained +0.05 to +0.17 dB of MS-SSIM at equal rate at
    # densities 2 and 5 and lost at 24 (Primitives and the loss, 2026-12-07).
    ssim_weight_sparse: float = 0.9
    ssim_sparse_density: float = 8.0
    ssim_from: float = 0.67
    ssim_pool: int = 2
    ssim_round: bool = True
    # tune ssim: least-squares colours minimise the squared error alone and undo what the
    # term did to the colours, so (False) the free fit's re-solves stop where the term
    # starts and the finish rounds the re-fitted colours, after a third re-fit round with
    # the whole geometry on the grid, instead of solving them; a coarser colour step for
    # tune ssim was neutral (Primitives and the loss, 2026-12-06 least squares off).
    ssim_ls_colors: bool = False
    # ---- the run ----------------------------------------------------------------------
    seed: int = 0
    backend: str = "auto"
    record_every: int = 0             # >0: keep (phase, step, mse) in EncodeState.history

    @classmethod
    def first_release(cls, **kw) -> "FitConfig":
        """The first release's fit (the old behaviour that fit_curve compares against):
        random start, base Adam steps with beta2 0.999, no refinement, no colour re-solves."""
        base = dict(init="random", lr_free_boost=1.0, boost_exponent=0.0, free_beta2=0.999,
                    color_solve_every=0, refine_at=(), log2_sigma_floor=float(LOG2_SIGMA_MIN))
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

    def free_boost(self, n: int, npix: float) -> float:
        """The free fit's step multiplier for n Gaussians on npix (known) pixels:
        lr_free_boost up to scale_from Gaussians per 1000 pixels, falling as
        (scale_from / density) ** boost_exponent above."""
        if self.boost_exponent <= 0 or npix <= 0:
            return self.lr_free_boost
        falloff = min(1.0, self.scale_from * npix / max(1000.0 * n, 1e-9))
        return self.lr_free_boost * falloff ** self.boost_exponent

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

    def ls_colors(self) -> bool:
        """Whether colours are solved by least squares once the loss is no longer the
        squared error alone (tune ssim, `ssim_ls_colors`): always for tune psnr, and
        where the rounding has no re-fits to fit the colours on the grid (fast)."""
        return self.tune != "ssim" or self.ssim_ls_colors or self.round_refit_steps <= 0

    def ssim_weight_at(self, density: float) -> float:
        """The MS-SSIM term's weight for a set of `density` Gaussians per 1000 pixels."""
        return self.ssim_weight_sparse if density < self.ssim_sparse_density else self.ssim_weight

    def resolve_until(self) -> float:
        """The fraction of the free fit up to which the colours are re-solved."""
        if self.ls_colors():
            return self.color_solve_until
        return min(self.color_solve_until, self.ssim_from)

    def qat_steps(self) -> int:
        """Quantization-aware steps of the gsi profile."""
        return self.qat_iterations if self.qat_iterations is not None else 0

    def gi_qat_steps(self) -> int:
        """Quantization-aware steps of the GaussianImage profile (its vector-quantized
        colours are fitted there): a fifth of the free fit's, at least 50."""
        if self.qat_iterations is not None:
            return self.qat_iterations
        return max(50, self.iterations // 5) if self.iterations > 0 else 0


# --effort presets, one row each: the FitConfig fields that differ from the defaults
# (None: the default). Chosen on the measured front of PSNR against encode time (Fitting,
# 2026-11-30 (second and third sessions); default 1200: 2026-12-01 (tenth session)
# ca39fcc). fast skips the re-fits and rounds its colours at once: at 250 iterations free
# iterations pay more (Quantization, 2026-12-01 (eleventh session) 2421ff7). max takes
# the finish density 24 gets at default, at every density. fast moves refine_fraction
# only: its short fit does not recover from more moves (-0.09 to +0.03 dB on four Kodak
# images at density 5; Fitting, 2026-12-06 (fifth session)).
_EFFORT_FIELDS = ("iterations", "iterations_exponent", "iterations_max_scale",
                  "round_refit_steps", "color_round_batches", "color_round_steps",
                  "refine_gain_ratio")
_EFFORT_ROWS = {
    #            iterations  exponent  max scale  re-fit steps  colour batches  CG steps  gain ratio
    "fast":     (250,        None,     None,      0,            1,              None,     0.0),
    "default":  (1200,       0.8,      2.0,       None,         None,           None,     None),
    "max":      (5000,       None,     None,      100,          32,             16,       None),
}
EFFORT_PRESETS = {name: {f: v for f, v in zip(_EFFORT_FIELDS, row, strict=True) if v is not None}
                  for name, row in _EFFORT_ROWS.items()}
