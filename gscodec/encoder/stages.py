"""The encoder's stages and the explicit state they pass on.

An encode is a `pipeline.Pipeline` of stages over one `EncodeState` (the parameters, the
quantization steps and classes, the random generator, the integers and the bytes): start
-> free fit -> quantize (steps and classes; the quantization-aware fit, if any) ->
progressive rounding of the geometry -> colours -> write. The GaussianImage profile has
its own tail (`gi_finetune.GIFineTune`, then `Write`). Each stage is a frozen dataclass
holding the settings it reads (the `FitConfig` and, where the stage needs it, the number
of Gaussians asked for) with a `name`, `steps(objective)` (its Adam steps, for the
progress bar) and `run(objective, state, bar)`. Stages touch the state only through its
fields; the objective (`objective.Objective`) holds the image and no state of the encode.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from ..bitstream import format as gsi_format
from .adam import AdamPhase, run_adam
from .config import FitConfig
from .init import solve_colors
from .params import GaussianParams, start_waves
from .progress import Progress
from .quantize import QuantConfig, canonicalize, fake_quantize, snap_positions, to_integers
from .refine import ColorResolves, Refinement
from .waves import WaveSelection


@dataclass
class EncodeState:
    """What one encode carries from stage to stage."""
    gen: torch.Generator                 # every random draw of the encode, in order
    params: GaussianParams | None = None  # the float Gaussians
    quant: QuantConfig | None = None     # the steps of this set (cfg.quant resolved for it)
    cls: torch.Tensor | None = None      # the class of each Gaussian (LongTensor [N])
    coded: object = None                 # the integers (QuantizedGaussians or GIGaussians)
    data: bytes | None = None            # the file
    history: list = field(default_factory=list)   # (phase, step, mse): FitConfig.record_every
    seconds: dict = field(default_factory=dict)   # wall time of each stage run, by name
    coarse_pos: bool | None = None       # `PositionChoice` kept the coarser positions (None:
                                         # not tried)

    @classmethod
    def new(cls, objective, seed: int) -> "EncodeState":
        return cls(torch.Generator(device=objective.device).manual_seed(int(seed)))

    def fork(self) -> "EncodeState":
        """An independent copy: the parameters, and a generator at the same point of its
        sequence (the two continue alike)."""
        gen = torch.Generator(device=self.gen.device)
        gen.set_state(self.gen.get_state())
        return replace(self, gen=gen, params=self.params.detach(), history=list(self.history),
                       seconds=dict(self.seconds))

    def with_params(self, params: GaussianParams) -> "EncodeState":
        """The same encode (generator, steps, classes) on other parameters."""
        return replace(self, params=params, coded=None, data=None)

    def ensure_quant(self, objective) -> None:
        """Steps and classes for the current parameters where none were chosen (no
        quantize stage ran) or the classes are of another set (rate control dropped some)."""
        p = self.params
        if self.quant is None:
            self.quant = objective.choose_quant(p)
        if self.cls is None or self.cls.numel() != p.count:
            self.cls = objective.assign_classes(p, self.quant)


def adam_steps(cfg: FitConfig) -> tuple:
    """The base Adam step of each attribute (the wave's: per column, as a tensor)."""
    return (("pos", cfg.lr_xy), ("scale", cfg.lr_log2_sigma), ("rot", cfg.lr_theta),
            ("color", cfg.lr_color),
            ("wave", (cfg.lr_wave_amp, cfg.lr_wave_logfreq, cfg.lr_wave_phase, 0.0, 0.0)))


@dataclass(frozen=True)
class Start:
    """The starting set: `count` Gaussians, times cfg.overcomplete when the free fit's
    refinements will prune the excess (a set too small for them to move any Gaussian is
    not enlarged); the state's steps and classes are cleared (the new set gets its own)."""
    cfg: FitConfig
    count: int
    name: ClassVar[str] = "start"

    def steps(self, objective) -> int:
        return 0

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        cfg, n = self.cfg, self.count
        n0 = n
        if cfg.refine_at and cfg.iterations > 0 and int(cfg.refine_fraction * n) >= 1:
            n0 = min(max(n, int(round(cfg.overcomplete * n))), objective.h * objective.w)
        state.quant = state.cls = None
        p = objective.start(n0, state.gen)
        if cfg.waves:
            p.wave = start_waves(p.count, state.gen, cfg.wave_start_logfreq, objective.device)
        state.params = p


@dataclass(frozen=True)
class FreeFit:
    """Adam on every attribute (cfg.free_steps), with the refinements (`Refinement`) and
    the periodic colour solves (`ColorResolves`); ends with `count` Gaussians."""
    cfg: FitConfig
    count: int
    name: ClassVar[str] = "fit"

    def steps(self, objective) -> int:
        return self.cfg.free_steps(self.count, objective.npix)

    def phase(self, objective) -> AdamPhase:
        cfg = self.cfg
        events = (Refinement(self.count, cfg.refine_at, cfg.refine_fraction,
                                 cfg.refine_gain_ratio, cfg.refine_max_fraction),
                  WaveSelection(cfg.wave_select_at, cfg.wave_keep),
                  ColorResolves(cfg.color_solve_every, cfg.resolve_until(),
                                cfg.color_resolve_steps))
        return AdamPhase(self.name, self.steps(objective), adam_steps(cfg),
                         cfg.free_boost(self.count, objective.npix),
                         cfg.free_beta2, cfg.lr_final_fraction, events=events,
                         record_every=cfg.record_every)

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        p = run_adam(objective, state, self.phase(objective), bar)
        if p.count > self.count:   # a refinement found nothing to move: drop the excess here
            p = objective.drop(p, p.count - self.count)
        state.params = p


@dataclass(frozen=True)
class Quantize:
    """Choose the set's steps and classes (fixed from here on), then `qat_steps`
    quantization-aware Adam steps (None: cfg.qat_steps(), none for the gsi profile)."""
    cfg: FitConfig
    qat_steps: int | None = None
    name: ClassVar[str] = "quantize"

    def steps(self, objective) -> int:
        return self.cfg.qat_steps() if self.qat_steps is None else self.qat_steps

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        cfg = self.cfg
        p = canonicalize(state.params)
        state.quant = objective.choose_quant(p)
        state.cls = objective.assign_classes(p, state.quant)
        state.params = p
        phase = AdamPhase(self.name, self.steps(objective), adam_steps(cfg), 0.2, 0.999,
                          cfg.lr_final_fraction, quantized=True, record_every=cfg.record_every)
        state.params = canonicalize(run_adam(objective, state, phase, bar))


@dataclass(frozen=True)
class RoundGeometry:
    """Progressive rounding: positions rounded to the file's grid, then sizes, each
    followed by a short re-fit of the attributes still free (cfg.finish_effort), and
    without least-squares colours (cfg.ls_colors()) the angles too; `Colours` rounds the
    rest. `count`: the Gaussians asked for (the progress bar's length)."""
    cfg: FitConfig
    count: int
    name: ClassVar[str] = "round"
    ROUNDS: ClassVar[tuple] = ((("pos",), ("scale", "rot", "color", "wave")),
                               (("pos", "scale"), ("rot", "color", "wave")))
    LAST_ROUND: ClassVar[tuple] = ((("pos", "scale", "rot"), ("color", "wave")),)

    def steps(self, objective) -> int:
        return len(self.rounds()) * self.cfg.finish_effort(self.count, objective.npix)[0]

    def rounds(self) -> tuple:
        """(rounded, free) of each re-fit. Without least-squares colours the angles are
        rounded here too, so that the colours' re-fit makes up for them (`Colours` then
        only rounds the colours)."""
        return self.ROUNDS if self.cfg.ls_colors() else self.ROUNDS + self.LAST_ROUND

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        cfg = self.cfg
        state.ensure_quant(objective)
        p = state.params
        k = cfg.finish_effort(p.count, objective.npix)[0]
        if k <= 0 or p.count == 0:
            return
        p = canonicalize(p)
        for rounded, free in self.rounds():
            g = fake_quantize(p, state.quant, objective.w, objective.h, state.cls)
            if cfg.snap_positions:   # (positions already on the grid stay where they are)
                g.pos = snap_positions(p, state.quant, objective.w, objective.h, state.cls)
            state.params = p.with_attributes(g, rounded)
            phase = AdamPhase(self.name, k, adam_steps(cfg), cfg.round_refit_lr,
                              cfg.free_beta2, cfg.lr_final_fraction, free=free)
            # (a re-fit may have made the minor axis the larger)
            p = canonicalize(run_adam(objective, state, phase, bar))
        state.params = p


@dataclass(frozen=True)
class Colours:
    """Least-squares colours for the rounded geometry, rounded to the file's steps in
    batches (cfg.finish_effort; a fixed random partition), the colours not yet rounded
    re-solved after each so that they make up for their neighbours' rounding; without
    least-squares colours (cfg.ls_colors(): tune ssim) the re-fitted colours rounded at
    once. Then the integers (state.coded)."""
    cfg: FitConfig
    name: ClassVar[str] = "colours"

    def steps(self, objective) -> int:
        return 0

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        state.ensure_quant(objective)
        p, q = state.params, state.quant
        if self.cfg.snap_positions and p.count:   # (without RoundGeometry's re-fits: fast)
            p = p.detach()
            p.pos = snap_positions(p, q, objective.w, objective.h, state.cls)
        g = fake_quantize(p, q, objective.w, objective.h, state.cls)
        out = p.detach()
        if not self.cfg.ls_colors():   # (the re-fitted colours, rounded at once)
            out.color = g.color.detach()
        else:
            geom = g.with_attributes(p, ("color",))
            geom.color = solve_colors(objective.target, geom, self.cfg.color_solve_steps,
                                      objective.color_weight)
            out.color = self.round_colors(objective, state, geom)
        state.coded = to_integers(out, q, objective.w, objective.h,
                                  masked=objective.known is not None,
                                  cls=state.cls.cpu().numpy())

    def round_colors(self, objective, state: EncodeState, g: GaussianParams) -> torch.Tensor:
        """The colours of g (geometry on the grid, least-squares colours) rounded in
        batches, the rest re-solved by least squares after each."""
        _, nb, cg = self.cfg.finish_effort(g.count, objective.npix)
        nb = min(nb, g.count)
        w, h, dev = objective.w, objective.h, objective.device
        with torch.no_grad():
            if nb <= 1:
                return fake_quantize(g, state.quant, w, h, state.cls).color
            # (its own generator: the partition does not move the encode's sequence)
            order = torch.randperm(g.count, generator=torch.Generator().manual_seed(
                self.cfg.seed)).to(dev)
            col = g.color.clone()
            done = torch.zeros(g.count, dtype=torch.bool, device=dev)
            for k, batch in enumerate(order.chunk(nb)):
                view = GaussianParams(g.pos, g.scale, g.rot, col)
                col[batch] = fake_quantize(view, state.quant, w, h, state.cls).color[batch]
                done[batch] = True
                if k == nb - 1:
                    break
                fixed = g.select(done)
                fixed.color = col[done]
                rest = g.select(~done)
                rest.color = col[~done]
                col[~done] = solve_colors(objective.target - objective.render(fixed), rest,
                                          cg, objective.color_weight)
        return col


@dataclass(frozen=True)
class Write:
    """The file of the integers (either profile)."""
    name: ClassVar[str] = "write"

    def steps(self, objective) -> int:
        return 0

    def run(self, objective, state: EncodeState, bar: Progress) -> None:
        state.data = gsi_format.write(state.coded)
