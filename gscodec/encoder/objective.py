"""`Objective`: what the fit of one image minimises, and the operations on a set of
Gaussians that need the image (render, error, least-squares colours, the start, the cost
of removing a Gaussian, the quantization steps and classes for a fitted set). It holds
no state of the encode: that is `stages.EncodeState`."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream.model import LOG2_SIGMA_MAX, LOG2_SIGMA_MIN
from ..render import resolve_backend
from .config import FitConfig
from .init import color_adjoint, random_init, render_params, solve_colors, structure_init
from .params import WAVE_AMP, WAVE_LOGFREQ, GaussianParams
from .quantize import WAVE_AMP_MAX, WAVE_F0, WAVE_FREQS, assign_classes
from .stages import FreeFit, RoundGeometry  # (their names label their Adam steps)

# The fitted log2 frequency of a wave stays within the file's levels (half an octave apart
# from WAVE_F0 / 2).
WAVE_LOGFREQ_RANGE = (WAVE_F0 / 2, (WAVE_F0 + WAVE_FREQS - 1) / 2)


class Objective:
    """The mean squared error over the known pixels of one image (subclasses add a term:
    `masked.HoleAwareObjective`)."""

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
        self.known = self._known3 = None
        if mask is not None:
            self.known = torch.from_numpy((~mask).astype(np.float32)).to(self.device)
            # known per channel: a product with it takes a quarter of the time of one
            # broadcast from [H, W, 1] (image_gradient).
            self._known3 = self.known[:, :, None].expand(self.h, self.w, self.c).contiguous()
            # Unknown pixels never reach the fit (not even the initialisation).
            self.target = self.target * self._known3
        # Per-pixel weight of the least-squares colour solves (subclasses may soften it).
        self.color_weight = self.known
        self.npix = float(self.known.sum()) if self.known is not None else float(self.h * self.w)
        self._fused: bool | None = None  # loss() by the kernel's loss_backward (set on first use)
        self._on_kernel: bool | None = None   # the fit on the compiled CPU kernel

    # ---- render and error -----------------------------------------------------------------
    def render(self, p: GaussianParams) -> torch.Tensor:
        return render_params(p, self.h, self.w, self.cfg.backend)

    def mse(self, out: torch.Tensor) -> torch.Tensor:
        # F.mse_loss is one fused pass each way: half the time of (d * d).sum() with its
        # temporaries (Fitting, 2026-11-30 (third session) cheaper iterations).
        if self.known is not None:
            out = out * self._known3  # the target is already zero there
        return F.mse_loss(out, self.target, reduction="sum") / (self.npix * self.c)

    def image_gradient(self, out: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(mse(out), the gradient of the loss with respect to the render out) in closed
        form: the fit's gradients without autograd on image-sized tensors. Objectives with
        an extra term add its gradient (`masked.HoleAwareObjective`)."""
        known, scale = self._known3, 1.0 / (self.npix * self.c)
        d = out - self.target if known is None else (out * known).sub_(self.target)
        flat = d.view(-1)
        # One BLAS dot: a quarter of the time of (d * d).sum(), within 2e-5 of it on
        # kodim23; the mse is only shown and recorded.
        mse = float(torch.dot(flat, flat)) * scale
        if known is not None:
            # At unknown pixels d is -target (0, or HoleAwareObjective's fill): a constant of
            # the mse, as in `mse`, with no gradient.
            d.mul_(known)
        return mse, d.mul_(2.0 * scale)

    def loss(self, p: GaussianParams, at=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mse, loss to minimise) of the parameters; `at`: (phase label, step, steps) of
        the Adam loop's step, for objectives whose loss changes during the fit. On the
        compiled CPU kernel, and with no extra term, render, error and gradients are one
        kernel call."""
        if self._fused is None:
            self._fused = (type(self).extra_loss is Objective.extra_loss
                           and resolve_backend(self.cfg.backend, self.target) == "kernel")
        if self._fused:   # (with waves too: the kernel returns their gradients)
            from ..render.kernel_torch import render_mse_cpu
            mse = render_mse_cpu(p.pos, p.conics(), p.color, self.target, self.known,
                                 1.0 / (self.npix * self.c), p.waves())
            return mse, mse
        out = self.render(p)
        mse = self.mse(out)
        return mse, mse + self.extra_loss(p, out)

    def closed_form_gradients(self, p: GaussianParams):
        """(mse, the gradients of the loss as a GaussianParams) without autograd, on the
        fitting kernel: its gradients with respect to means, conics and colours chained to
        the log2 scales and angles in closed form (`kernel_torch.FlatFitStep`); the loss in
        one kernel call, or with an extra term on the render through the kernel's backward
        of the image gradient (`image_gradient`). None where the kernel cannot (another
        backend) or for a set with waves (their chain rule through `wave_vectors` is left
        to autograd, which `loss` feeds from the kernel's wave gradients): the caller uses
        autograd through `loss`; so does an objective with a loss of its own
        (`SSIMObjective`: log units, MS-SSIM), or with an extra term but no image gradient
        of it."""
        if not self._closed_form(p):
            return None
        x = torch.cat([p.pos, p.scale, p.rot[:, None], p.color], 1)
        mse, g = self._flat_step(x)
        return mse, GaussianParams(g[:, 0:2], g[:, 2:4], g[:, 4], g[:, 5:])

    def flat_gradients(self, flat):
        """closed_form_gradients on the buffer of `adam.FlatParams` as it is: (mse, the
        loss's gradient laid out as flat.x), or None."""
        if not self._closed_form(flat.params):
            return None
        return self._flat_step(flat.x)     # (no waves: the columns pos, scale, rot, color)

    def _closed_form(self, p: GaussianParams) -> bool:
        """Whether closed-form gradients apply (see closed_form_gradients)."""
        kind = type(self)
        extra = kind.extra_loss is not Objective.extra_loss
        return (p.wave is None and kind.loss is Objective.loss and self._kernel_fits()
                and not (extra and kind.image_gradient is Objective.image_gradient))

    def _flat_step(self, x: torch.Tensor):
        """(mse, g [N, 5 + C]) of the loss for x (x, y, l1, l2, theta, colours): the squared
        error in one fused kernel call, or a render, its image gradient and the kernel's
        backward of it for an objective with an extra term."""
        from ..render.kernel_torch import FlatFitStep
        step = FlatFitStep(x, self.h, self.w)
        if type(self).extra_loss is Objective.extra_loss:
            return step.loss_gradients(self.target, self.known, 1.0 / (self.npix * self.c))
        mse, g_out = self.image_gradient(step.forward(self.c))
        return mse, step.backward(g_out)

    def _kernel_fits(self) -> bool:
        """Whether the fit runs on the compiled CPU kernel (set on first use)."""
        if self._on_kernel is None:
            self._on_kernel = resolve_backend(self.cfg.backend, self.target) == "kernel"
        return self._on_kernel

    def extra_loss(self, p: GaussianParams, out: torch.Tensor):
        """A term added to the loss; subclasses (masked fitting) add their own, and its
        gradient in `image_gradient`."""
        return 0.0

    def residual(self, p: GaussianParams) -> torch.Tensor:
        """target - render(p), zero at unknown pixels."""
        resid = self.target - self.render(p)
        return resid * self.known[:, :, None] if self.known is not None else resid

    def clamp(self, p: GaussianParams) -> None:
        """Keep positions in the image and log-scales in the format's range, above the
        fit's floor (FitConfig.log2_sigma_floor), in place."""
        with torch.no_grad():
            p.pos[:, 0].clamp_(0, self.w)
            p.pos[:, 1].clamp_(0, self.h)
            p.scale.clamp_(max(LOG2_SIGMA_MIN, self.cfg.log2_sigma_floor), LOG2_SIGMA_MAX)
            if p.wave is not None:
                p.wave[:, WAVE_AMP].clamp_(-WAVE_AMP_MAX, WAVE_AMP_MAX)
                p.wave[:, WAVE_LOGFREQ].clamp_(*WAVE_LOGFREQ_RANGE)

    # ---- sets of Gaussians ----------------------------------------------------------------
    def start(self, n: int, gen: torch.Generator) -> GaussianParams:
        """n Gaussians placed by the configured initializer, least-squares colours."""
        init = structure_init if self.cfg.init == "structure" else random_init
        return self.solve_colors(init(self.target, n, gen))

    def solve_colors(self, p: GaussianParams, steps: int | None = None) -> GaussianParams:
        """Same geometry, least-squares colours over the known pixels."""
        p = p.detach()
        steps = self.cfg.color_solve_steps if steps is None else steps
        p.color = solve_colors(self.target, p, steps, self.color_weight)
        return p

    def removal_cost(self, p: GaussianParams, resid: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Rise of the summed squared error if Gaussian k alone were removed (resid: the
        residual of p, computed when not given):
        ||c_k g_k||^2 + 2 <c_k g_k, r>, with ||g_k||^2 ~ pi sigma_x sigma_y (the integral of
        a squared Gaussian) and <g_k, r> from the renderer's adjoint. Pruning by it beat
        pruning by colour mass (Fitting, 2026-11-21 free-fit rework)."""
        if resid is None:
            resid = self.residual(p)
        g = color_adjoint(p, resid, self.cfg.backend)
        area = torch.exp2(p.scale.detach().clamp(max=12)).prod(1)
        c = p.color.detach()
        return math.pi * area * (c * c).sum(1) + 2 * (c * g).sum(1)

    def keep_mask(self, p: GaussianParams, resid: torch.Tensor, k: int) -> torch.Tensor:
        """All but the k Gaussians whose removal would raise the squared error least."""
        keep = torch.ones(p.count, dtype=torch.bool, device=self.device)
        if k > 0:
            keep[torch.argsort(self.removal_cost(p, resid))[:k]] = False
        return keep

    def drop(self, p: GaussianParams, k: int) -> GaussianParams:
        """p without the k Gaussians whose removal raises the squared error least, with
        least-squares colours."""
        with torch.no_grad():
            keep = self.keep_mask(p, self.residual(p), k)
        return self.solve_colors(p.select(keep))

    # ---- quantization ---------------------------------------------------------------------
    def choose_quant(self, p: GaussianParams):
        """The steps for the fitted set p: cfg.quant resolved for its density, its error
        and its median size (`QuantConfig.for_fit`)."""
        with torch.no_grad():
            mse = float(self.mse(self.render(p).clamp(0.0, 1.0)))
            octave = int(torch.floor(p.scale.sum(-1)).median()) if p.count else 0
        psnr = 10.0 * math.log10(1.0 / max(mse, 1e-12))
        return self.cfg.quant.for_fit(p.count, self.h * self.w, psnr, octave,
                                      waves=p.wave is not None)

    def assign_classes(self, p: GaussianParams, quant) -> torch.Tensor:
        """Class of each Gaussian (LongTensor [N]) for the steps `quant`: one class, or
        with several classes `quantize.assign_classes` (by size and local complexity)."""
        if len(self.cfg.quant.classes) == 1:
            return torch.zeros(p.count, dtype=torch.long, device=self.device)
        return assign_classes(p, quant, self.target, self.known)


class SSIMObjective(Objective):
    """`--tune ssim`: the gradient steps minimise (1 - w) log(MSE) + w log(1 - MS-SSIM), w =
    cfg.ssim_weight_at(the set's density): a weighted sum of the two metrics in dB (PSNR
    and MS-SSIM as the benchmark converts it), so the mix does not depend on either's
    scale. The colour solves, the pruning cost and the choice of steps stay least squares
    (`Objective`).

    MS-SSIM costs more than the kernel's fused squared-error step, so the term is on in
    the last part of the free fit only (from cfg.ssim_from of its steps) and, when
    cfg.ssim_round, in the rounding's re-fits; it is taken on the render pooled
    cfg.ssim_pool x cfg.ssim_pool, which drops MS-SSIM's finest scales (2x2: the finest,
    weight 0.0448 of 1). Other steps are the fused kernel's (`Objective`)."""

    def __init__(self, image, cfg: FitConfig, mask=None):
        super().__init__(image, cfg, mask)
        from .msssim import WEIGHTS, WIN, MSSSIMTo, scales_for
        # The coarsest pooling up to cfg.ssim_pool whose image still has the scales it is
        # used for; a small image gets fewer scales (one: SSIM; none under 11 pixels).
        pool, first = 1, 0
        while (pool * 2 <= cfg.ssim_pool and min(self.h, self.w) // (2 * pool)
               > (WIN - 1) * 2 ** (len(WEIGHTS) - first - 2)):
            pool, first = pool * 2, first + 1
        self.pool = pool
        target = self._view(self.target)
        scales = scales_for(*target.shape[-2:])
        self.ms_ssim = MSSSIMTo(target, scales=scales, first=first) if scales else None

    def _view(self, out: torch.Tensor) -> torch.Tensor:
        """[1, C, h, w] of an [H, W, C] image, pooled."""
        v = out.permute(2, 0, 1)[None]
        return F.avg_pool2d(v, self.pool) if self.pool > 1 else v

    def uses_ssim(self, at) -> bool:
        """Whether the step `at` = (phase label, step, steps) has the MS-SSIM term."""
        if self.ms_ssim is None or at is None:
            return False
        label, step, steps = at
        return ((label == FreeFit.name and step >= self.cfg.ssim_from * steps)
                or (label == RoundGeometry.name and self.cfg.ssim_round))

    def loss(self, p: GaussianParams, at=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mse, loss): with the MS-SSIM term one render through autograd (the kernel's
        plan forward, its backward with the image's gradient), without it the fused
        kernel; the loss is in log units either way, so Adam sees one scale."""
        w = self.cfg.ssim_weight_at(1000.0 * p.count / self.npix)
        if w <= 0 or not self.uses_ssim(at):
            mse = super().loss(p)[0]
            return mse, (1 - w) * torch.log(mse)
        out = self.render(p)
        mse = self.mse(out)
        return mse, (1 - w) * torch.log(mse) + w * torch.log1p(-self.ms_ssim(self._view(out)))
