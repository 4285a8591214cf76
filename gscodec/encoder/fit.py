"""Fitting Gaussians to an image: the encoder's optimisation.

Three phases:
1. start (`init.py`): structure-guided or random placement, least-squares colours;
2. free fit: Adam on positions, log-scales, rotations and colours with cosine-decayed
   learning rates, minimising the mean squared error over known pixels; every 50
   iterations the colours are re-solved by least squares and Adam restarts, and six times
   the Gaussians that matter least are moved to where the residual is largest (`refine`).
   The fit starts with `overcomplete` times the Gaussians asked for, and those six
   refinements also prune the excess;
3. quantization-aware fit: the same loss on `fake_quantize`d parameters (straight-through
   rounding), then a last least-squares colour solve for the quantized geometry, so the
   integers written are what the fit saw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream.model import LOG2_SIGMA_MAX, LOG2_SIGMA_MIN, QuantizedGaussians
from ..render import render, resolve_backend
from .init import blur, color_adjoint, random_init, solve_colors, structure_init
from .params import GaussianParams
from .progress import Progress
from .quantize import QuantConfig, assign_classes, canonicalize, fake_quantize, to_integers


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
EFFORT_ITERATIONS = {k: v["iterations"] for k, v in EFFORT_PRESETS.items()}


def lr_factor(step: int, total: int, final: float) -> float:
    if total <= 1:
        return 1.0
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / (total - 1)))



class Adam:
    """Adam (Kingma & Ba) over a few tensors, each with its own learning rate. Written out
    because constructing torch.optim.Adam imports torch._dynamo, which costs 5-20 s of
    start-up per process on a small CPU: more than a short encode takes."""

    def __init__(self, groups, betas=(0.9, 0.999), eps=1e-12):
        self.params = [t for t, _ in groups]
        self.base_lr = [lr for _, lr in groups]
        self.lr = list(self.base_lr)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(t) for t in self.params]
        self.v = [torch.zeros_like(t) for t in self.params]
        self.t = 0

    def zero_grad(self):
        for t in self.params:
            t.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        bc1 = 1 - self.b1 ** self.t
        bc2 = 1 - self.b2 ** self.t
        for p, m, v, lr in zip(self.params, self.m, self.v, self.lr):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            denom = (v / bc2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bc1)



class Fitter:
    def __init__(self, image: np.ndarray, cfg: FitConfig, mask: np.ndarray | None = None):
        """image: HxWxC uint8 (or a float tensor in [0, 1]). mask: HxW bool, True where
        the pixel is unknown (ignored)."""
        self.cfg = cfg
        # Everything the fit touches lives on one device: the GPU with the triton backend (on
        # a machine without one, the triton backend runs under Triton's interpreter on CPU
        # tensors: that is how CI tests it).
        self.device = torch.device("cuda" if cfg.backend == "triton" and torch.cuda.is_available()
                                   else "cpu")
        if isinstance(image, torch.Tensor):
            self.target = image.to(self.device, torch.float32)
        else:
            self.target = torch.from_numpy(image.astype(np.float32) / 255.0).to(self.device)
        self.h, self.w, self.c = self.target.shape
        self.known = None
        if mask is not None:
            self.known = torch.from_numpy((~mask).astype(np.float32)).to(self.device)
            # Unknown pixels never reach the fit (not even the initialisation).
            self.target = self.target * self.known[:, :, None]
        # Per-pixel weight of the least-squares colour solves (subclasses may soften it).
        self.color_weight = self.known
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.history: list[tuple[str, int, float]] = []
        self.cls = None           # class of each Gaussian (set before quantization)
        self.quant = None         # the steps of this fit (cfg.quant resolved for it)
        self.npix = float(self.known.sum()) if self.known is not None else float(self.h * self.w)
        self._fused: bool | None = None  # loss() by the kernel's loss_backward (set on first use)

    # ---- pieces -------------------------------------------------------------------------
    def render(self, p: GaussianParams) -> torch.Tensor:
        return render(p.xy, p.conics(), p.color, self.h, self.w, backend=self.cfg.backend)

    def mse(self, out: torch.Tensor) -> torch.Tensor:
        # F.mse_loss is one fused pass each way: half the time of (d * d).sum() with its
        # temporaries (a Kodak image, two threads: 1.9 ms against 3.7 ms per step).
        if self.known is not None:
            out = out * self.known[:, :, None]  # the target is already zero there
        return F.mse_loss(out, self.target, reduction="sum") / (self.npix * self.c)

    def start(self, n: int) -> GaussianParams:
        init = structure_init if self.cfg.init == "structure" else random_init
        return self.solve_colors(init(self.target, n, self.gen))

    def _optimizer(self, p: GaussianParams, scale: float, beta2: float = 0.999,
                   free: tuple = ("xy", "log2_sigma", "theta", "color")):
        """Adam over the attributes of p named in `free` (the others stay fixed)."""
        c = self.cfg
        lrs = {"xy": c.lr_xy, "log2_sigma": c.lr_log2_sigma, "theta": c.lr_theta,
               "color": c.lr_color}
        groups = []
        for name in free:
            t = getattr(p, name)
            t.requires_grad_(True)
            groups.append((t, lrs[name] * scale))
        return Adam(groups, betas=(0.9, beta2))

    def _clamp(self, p: GaussianParams) -> None:
        with torch.no_grad():
            p.xy[:, 0].clamp_(0, self.w)
            p.xy[:, 1].clamp_(0, self.h)
            p.log2_sigma.clamp_(max(LOG2_SIGMA_MIN, self.cfg.log2_sigma_floor), LOG2_SIGMA_MAX)

    def loss(self, p: GaussianParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(mse, loss to minimise) of the parameters. On the compiled CPU kernel, and with
        no extra term, render, error and gradients are one kernel call."""
        if self._fused is None:
            self._fused = (type(self).extra_loss is Fitter.extra_loss
                           and resolve_backend(self.cfg.backend, self.target) == "kernel")
        if self._fused:
            from ..render.kernel_torch import render_mse_cpu
            mse = render_mse_cpu(p.xy, p.conics(), p.color, self.target, self.known,
                                 1.0 / (self.npix * self.c))
            return mse, mse
        out = self.render(p)
        mse = self.mse(out)
        return mse, mse + self.extra_loss(p, out)

    def extra_loss(self, p: GaussianParams, out: torch.Tensor):
        """A term added to the loss; subclasses (masked fitting) add their own."""
        return 0.0

    def refine(self, p: GaussianParams, k: int, prune: bool = True, extra: int = 0
               ) -> GaussianParams:
        """Error-guided densify and prune: drop the k + extra Gaussians whose removal would
        raise the squared error least, add k where the smoothed squared residual is largest.
        prune=False only adds (rate control grows a set this way)."""
        if k <= 0 or (prune and p.count <= k + extra):
            return p
        with torch.no_grad():
            resid = self.residual(p)
            err = blur((resid * resid).sum(-1), 1.0).clamp(min=0)
            keep = self._keep_mask(p, resid, k + extra if prune else 0)
            if float(err.sum()) <= 0:
                return p
            idx = torch.multinomial(err.flatten().double(), k, replacement=False
                                    if k <= int((err > 0).sum()) else True, generator=self.gen)
            jitter = torch.rand(k, 2, generator=self.gen, device=self.device)
            xy = torch.stack([(idx % self.w).float(), (idx // self.w).float()], -1) + jitter
            # New Gaussians are small (detail), isotropic, coloured by the residual. Their
            # sigma, 0.3 of the mean spacing: +0.08 dB over 0.5 (kodim01, kodim04), 0.2 less.
            sigma = 0.3 * math.sqrt(self.h * self.w / p.count)
            ls = torch.full((k, 2), math.log2(max(0.5, sigma)), device=self.device)
            new = GaussianParams(xy, ls, torch.zeros(k, device=self.device),
                                 resid.reshape(-1, self.c)[idx])
        return GaussianParams.cat(p.select(keep), new)

    def residual(self, p: GaussianParams) -> torch.Tensor:
        """target - render(p), zero at unknown pixels."""
        resid = self.target - self.render(p)
        return resid * self.known[:, :, None] if self.known is not None else resid

    def _keep_mask(self, p: GaussianParams, resid: torch.Tensor, k: int) -> torch.Tensor:
        """All but the k Gaussians whose removal would raise the squared error least."""
        keep = torch.ones(p.count, dtype=torch.bool, device=self.device)
        if k > 0:
            keep[torch.argsort(self.removal_cost(p, resid))[:k]] = False
        return keep

    def removal_cost(self, p: GaussianParams, resid: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Rise of the summed squared error if Gaussian k alone were removed (resid: the
        residual of p, computed when not given):
        ||c_k g_k||^2 + 2 <c_k g_k, r>, with ||g_k||^2 ~ pi sigma_x sigma_y (the integral of
        a squared Gaussian) and <g_k, r> from the renderer's adjoint. Pruning by it gave
        +0.07 dB over pruning by colour mass |c| sigma_x sigma_y."""
        if resid is None:
            resid = self.residual(p)
        g = color_adjoint(p.xy, p.conics(), resid, self.cfg.backend)
        area = torch.exp2(p.log2_sigma.detach().clamp(max=12)).prod(1)
        c = p.color.detach()
        return math.pi * area * (c * c).sum(1) + 2 * (c * g).sum(1)

    def solve_colors(self, p: GaussianParams, steps: int | None = None) -> GaussianParams:
        """Same geometry, least-squares colours over the known pixels."""
        p = p.detach()
        steps = self.cfg.color_solve_steps if steps is None else steps
        p.color = solve_colors(self.target, p, steps, self.color_weight)
        return p

    def optimize(self, p: GaussianParams, steps: int, progress: Progress, phase: str,
                 quantized: bool = False, lr_scale: float = 1.0,
                 refine_at: tuple = (), count: int | None = None) -> GaussianParams:
        """`steps` Adam iterations (free, or quantization-aware with `quantized`), with the
        refinements at the fractions `refine_at`; those also prune the Gaussians beyond
        `count`, a share at each, so the last one leaves `count`."""
        if steps <= 0:
            return p
        c = self.cfg
        refine_steps = sorted({int(f * steps) for f in refine_at if 0 < f < 1})
        count = p.count if count is None else count
        beta2 = 0.999
        solve_every = 0
        if not quantized:
            lr_scale = lr_scale * c.lr_free_boost
            beta2 = c.free_beta2
            solve_every = c.color_solve_every
        opt = self._optimizer(p, lr_scale, beta2)
        q = self.quant
        for step in range(steps):
            if step in refine_steps:
                left = len(refine_steps) - refine_steps.index(step)
                extra = max(0, p.count - count) // left
                p = self.refine(p.detach(), int(c.refine_fraction * p.count), extra=extra)
                p = self.solve_colors(p)
                opt = self._optimizer(p, lr_scale, beta2)   # fresh moments for the new set
            elif (solve_every and step > 0 and step % solve_every == 0
                  and step < c.color_solve_until * steps):
                p = self.solve_colors(p, c.color_resolve_steps)
                opt = self._optimizer(p, lr_scale, beta2)
            f = lr_factor(step, steps, c.lr_final_fraction)
            opt.lr = [lr * f for lr in opt.base_lr]
            view = fake_quantize(p, q, self.w, self.h, self.cls) if quantized else p
            mse, loss = self.loss(view)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self._clamp(p)
            # The loss stays on the device: the bar reads it only when it redraws.
            progress.update(phase, mse.detach())
            every = c.record_every
            if every and (step % every == 0 or step == steps - 1):
                self.history.append((phase, step + 1, float(mse.detach())))
        return p.detach()

    # ---- the whole fit ------------------------------------------------------------------
    def fit(self, n: int, progress: bool = False) -> QuantizedGaussians:
        return self.finish(self.fit_params(n, progress, rounded=True))

    def fit_params(self, n: int, progress: bool = False, quantize: bool = True,
                   rounded: bool = False) -> GaussianParams:
        """Start, free fit, (with quantize) the quantization-aware phase and (with
        rounded) the progressive rounding, under one progress bar; the float parameters,
        before `finish`."""
        cfg = self.cfg
        bar = Progress(cfg.free_steps(n, self.npix) + (cfg.qat_steps() if quantize else 0)
                       + (self.round_steps(n) if rounded else 0), progress)
        try:
            p = self.free_fit(n, bar)
            if quantize:
                p = self.quantize_phase(p, bar)
            if rounded:
                p = self.round_phase(p, bar)
        finally:
            bar.close()
        return p

    def free_fit(self, n: int, bar: Progress) -> GaussianParams:
        """Start and free fit."""
        cfg = self.cfg
        self.quant = self.cls = None     # the new set gets its own steps and classes
        n0 = n
        if cfg.refine_at and cfg.iterations > 0 and int(cfg.refine_fraction * n) >= 1:
            # (a set too small for the refinements to move any Gaussian is not enlarged)
            n0 = min(max(n, int(round(cfg.overcomplete * n))), self.h * self.w)
        p = self.optimize(self.start(n0), cfg.free_steps(n, self.npix), bar, "fit",
                          refine_at=cfg.refine_at, count=n)
        if p.count > n:  # a refinement found nothing to move: drop the excess here
            p = self.drop(p, p.count - n)
        return p

    def drop(self, p: GaussianParams, k: int) -> GaussianParams:
        """p without the k Gaussians whose removal raises the squared error least, with
        least-squares colours."""
        with torch.no_grad():
            keep = self._keep_mask(p, self.residual(p), k)
        return self.solve_colors(p.select(keep))

    def quantize_phase(self, p: GaussianParams, bar: Progress, steps: int | None = None
                       ) -> GaussianParams:
        """Assign classes (this fixes the steps), then the quantization-aware fit, if any."""
        cfg = self.cfg
        p = canonicalize(p)
        self.quant = self.choose_quant(p)
        self.cls = self.assign_classes(p)
        p = self.optimize(p, cfg.qat_steps() if steps is None else steps, bar, "quantize",
                          quantized=True, lr_scale=0.2)
        return canonicalize(p)

    def round_steps(self, n: int) -> int:
        """Adam steps of `round_phase` for n Gaussians."""
        return 2 * self.cfg.finish_effort(n, self.npix)[0]

    def round_phase(self, p: GaussianParams, bar: Progress | None = None) -> GaussianParams:
        """Progressive rounding (re-fit steps: FitConfig.finish_effort): positions
        rounded to the file's grid, then sizes, each followed by a short fit of the
        attributes still free. Returns float parameters whose positions and sizes lie on the grid; `finish`
        rounds the rest."""
        cfg = self.cfg
        self._set_quant(p)
        k = cfg.finish_effort(p.count, self.npix)[0]
        if k <= 0 or p.count == 0:
            return p
        bar = bar if bar is not None else Progress(0, False)
        p = canonicalize(p)
        for rounded, free in ((("xy",), ("log2_sigma", "theta", "color")),
                              (("xy", "log2_sigma"), ("theta", "color"))):
            g = fake_quantize(p, self.quant, self.w, self.h, self.cls)
            p = GaussianParams(*(getattr(g if name in rounded else p, name).detach().clone()
                                 for name in ("xy", "log2_sigma", "theta", "color")))
            p = self._refit(p, free, k, bar)
            p = canonicalize(p)    # (a re-fit may have made the minor axis the larger)
        return p

    def _refit(self, p: GaussianParams, free: tuple, steps: int, bar: Progress
               ) -> GaussianParams:
        """`steps` Adam steps on the attributes named in `free`, the others fixed."""
        c = self.cfg
        opt = self._optimizer(p, c.round_refit_lr, c.free_beta2, free)
        for step in range(steps):
            f = lr_factor(step, steps, c.lr_final_fraction)
            opt.lr = [lr * f for lr in opt.base_lr]
            mse, loss = self.loss(p)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self._clamp(p)
            bar.update("round", mse.detach())
        return p.detach()

    def _set_quant(self, p: GaussianParams) -> None:
        if self.quant is None:      # no quantization-aware phase ran
            self.quant = self.choose_quant(p)
        if self.cls is None or self.cls.numel() != p.count:
            self.cls = self.assign_classes(p)

    def finish(self, p: GaussianParams) -> QuantizedGaussians:
        """Last least-squares colours for the quantized geometry, then the integers."""
        cfg = self.cfg
        self._set_quant(p)
        q = self.quant
        geom = fake_quantize(p, q, self.w, self.h, self.cls)
        geom = GaussianParams(geom.xy.detach(), geom.log2_sigma.detach(),
                              geom.theta.detach(), p.color.detach())
        geom.color = solve_colors(self.target, geom, cfg.color_solve_steps, self.color_weight)
        p.color = self.round_colors(geom)
        return to_integers(p, q, self.w, self.h, masked=self.known is not None,
                           cls=self.cls.cpu().numpy())

    def round_colors(self, g: GaussianParams) -> torch.Tensor:
        """The colours of g (geometry on the grid, least-squares colours) rounded to the
        file's steps in batches of Gaussians (FitConfig.finish_effort; a fixed random
        partition), the colours not yet rounded re-solved by least squares after each, so
        that they make up for the rounding of their neighbours."""
        _, nb, cg = self.cfg.finish_effort(g.count, self.npix)
        nb = min(nb, g.count)
        with torch.no_grad():
            if nb <= 1:
                return fake_quantize(g, self.quant, self.w, self.h, self.cls).color
            order = torch.randperm(g.count, generator=torch.Generator().manual_seed(
                self.cfg.seed)).to(self.device)
            col = g.color.clone()
            done = torch.zeros(g.count, dtype=torch.bool, device=self.device)
            for k, batch in enumerate(order.chunk(nb)):
                view = GaussianParams(g.xy, g.log2_sigma, g.theta, col)
                col[batch] = fake_quantize(view, self.quant, self.w, self.h, self.cls).color[batch]
                done[batch] = True
                if k == nb - 1:
                    break
                fixed = g.select(done)
                fixed.color = col[done]
                rest = g.select(~done)
                rest.color = col[~done]
                col[~done] = solve_colors(self.target - self.render(fixed), rest,
                                          cg, self.color_weight)
        return col

    def choose_quant(self, p: GaussianParams):
        """The steps for the fitted set p: cfg.quant resolved for its density, its error
        and its median size (`QuantConfig.for_fit`). The quantization-aware phase fixes
        them, and `finish` keeps them (rate control may then drop Gaussians)."""
        with torch.no_grad():
            mse = float(self.mse(self.render(p).clamp(0.0, 1.0)))
            octave = int(torch.floor(p.log2_sigma.sum(-1)).median()) if p.count else 0
        psnr = 10.0 * math.log10(1.0 / max(mse, 1e-12))
        return self.cfg.quant.for_fit(p.count, self.h * self.w, psnr, octave)

    def assign_classes(self, p: GaussianParams) -> torch.Tensor:
        """Class of each Gaussian (LongTensor [N]) for cfg.quant: one class, or with
        several classes `quantize.assign_classes` (by size and local image complexity)."""
        if len(self.cfg.quant.classes) == 1:
            return torch.zeros(p.count, dtype=torch.long, device=self.device)
        return assign_classes(p, self.quant, self.target, self.known)
