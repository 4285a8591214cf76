"""The encoder's one Adam loop (`run_adam`): every gradient phase of the pipeline (the free
fit, the quantization-aware fit, the re-fits of the progressive rounding) is an `AdamPhase`
run through it; what happens between steps (refinements, colour re-solves) is a strategy
passed in `events` (`refine.py`). The loop works on one buffer of all the attributes
(`FlatParams`, `FlatAdam`), with the gradients in closed form where the objective has them
(`Objective.flat_gradients`, on the kernel)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import FIT_ATTRIBUTES, GaussianParams
from .progress import Progress
from .quantize import fake_quantize


def lr_factor(step: int, total: int, final: float) -> float:
    """Cosine decay from 1 at step 0 to `final` at the last step."""
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
        for p, m, v, lr in zip(self.params, self.m, self.v, self.lr, strict=True):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            denom = (v / bc2).sqrt_().add_(self.eps)
            if isinstance(lr, torch.Tensor):     # a step per column (the waves)
                p.sub_(m / denom * (lr / bc1))
            else:
                p.addcdiv_(m, denom, value=-lr / bc1)


class FlatParams:
    """The attributes of a set of Gaussians as column blocks of one [N, K] tensor `x`, in
    FIT_ATTRIBUTES order (pos 2, scale 2, rot 1, color C, wave 5 if any): Adam, its clamps
    and the gradients work on the one buffer, a few operations a step instead of a few per
    attribute. `params` is a GaussianParams whose tensors are views of `x` (strategies and
    fake_quantize read the current values)."""

    def __init__(self, p: GaussianParams):
        tensors = [getattr(p, name) for name in FIT_ATTRIBUTES]
        self.names = tuple(n for n, t in zip(FIT_ATTRIBUTES, tensors, strict=True)
                           if t is not None)
        blocks = [t.detach().reshape(p.count, -1) for t in tensors if t is not None]
        self.slices, k = {}, 0
        for name, b in zip(self.names, blocks, strict=True):
            self.slices[name] = slice(k, k + b.shape[1])
            k += b.shape[1]
        self.x = torch.cat(blocks, 1).to(torch.float32).contiguous()
        self.params = self.view(self.x)

    def view(self, x: torch.Tensor) -> GaussianParams:
        """A GaussianParams of views of x (a tensor laid out as `self.x`)."""
        cols = {n: x[:, s] for n, s in self.slices.items()}
        cols["rot"] = cols["rot"][:, 0]
        return GaussianParams(*(cols.get(n) for n in FIT_ATTRIBUTES))

    def pack(self, g: GaussianParams) -> torch.Tensor:
        """The tensors of g (same attributes and counts as the set) in this layout."""
        return torch.cat([getattr(g, n).reshape(g.count, -1) for n in self.names], 1)

    def columns(self, values: dict) -> torch.Tensor:
        """[K]: values[name] (a number, or one per column) in each attribute's columns, 0 for
        attributes not named."""
        out = torch.zeros(self.x.shape[1], dtype=self.x.dtype, device=self.x.device)
        for name, s in self.slices.items():
            if name in values:
                v = values[name]
                out[s] = torch.as_tensor(v, dtype=out.dtype).to(out.device)
        return out


class FlatAdam:
    """Adam (Kingma & Ba) on one FlatParams buffer, with a step per column (0: fixed)."""

    def __init__(self, x: torch.Tensor, lr: torch.Tensor, betas=(0.9, 0.999), eps=1e-12):
        self.x, self.lr = x, lr
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = 0

    @torch.no_grad()
    def step(self, g: torch.Tensor, factor: float = 1.0):
        """One step along the gradient g (shaped as x), the steps times `factor`: in one
        kernel call on the CPU (a dozen torch operations on a small buffer cost more than
        their arithmetic), else in torch."""
        self.t += 1
        ext = _kernel_for(self.x)
        if ext is not None:
            ext.adam_step(self.x.numpy(), self.m.numpy(), self.v.numpy(),
                          g.detach().to(torch.float32).contiguous().numpy(),
                          self.lr.numpy(), self.b1, self.b2, self.t, self.eps, factor)
            return
        bc1 = 1 - self.b1 ** self.t
        bc2 = 1 - self.b2 ** self.t
        self.m.mul_(self.b1).add_(g, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        denom = (self.v / bc2).sqrt_().add_(self.eps)
        self.x.sub_(self.m / denom * (self.lr * (factor / bc1)))


def _kernel_for(x: torch.Tensor):
    """The compiled kernel, if it can step x in place (a contiguous float32 CPU tensor)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous():
        return None
    from ..render import extension
    return extension.kernel()


@dataclass(frozen=True)
class AdamPhase:
    """One run of the Adam loop: `steps` steps on the attributes named in `free` (the others
    fixed), base steps `lrs[name] * scale` with cosine decay to `final_fraction`, second
    moment decay `beta2`; `quantized`: the loss sees `fake_quantize`d parameters
    (straight-through rounding) with the state's steps and classes; `events`: strategies
    asked before each step (the first that returns new parameters wins, and Adam restarts
    on them); `record_every` > 0 keeps (label, step, mse) in the state's history."""
    label: str
    steps: int
    lrs: tuple                    # ((attribute, base step or one per column), ...)
    scale: float
    beta2: float
    final_fraction: float
    free: tuple = FIT_ATTRIBUTES
    quantized: bool = False
    events: tuple = ()
    record_every: int = 0

    def start(self, p: GaussianParams) -> tuple[FlatParams, FlatAdam]:
        """The set p in one buffer, and Adam over the attributes named in `free`."""
        flat = FlatParams(p)
        lrs = {name: torch.as_tensor(lr, dtype=torch.float32) * self.scale
               for name, lr in self.lrs if name in self.free}
        return flat, FlatAdam(flat.x, flat.columns(lrs), betas=(0.9, self.beta2))


def gradients(obj, state, phase: AdamPhase, flat: FlatParams, at=None):
    """(mse, the loss's gradient laid out as flat.x): in closed form where the objective
    can (`Objective.flat_gradients`), else by autograd through the loss; `at`:
    (phase label, step, steps), for objectives whose loss changes during the fit."""
    if not phase.quantized:
        out = obj.flat_gradients(flat)
        if out is not None:
            return out
    x = flat.x.detach().requires_grad_(True)
    p = flat.view(x)
    view = fake_quantize(p, state.quant, obj.w, obj.h, state.cls) if phase.quantized else p
    mse, loss = obj.loss(view, at)
    (g,) = torch.autograd.grad(loss, x)
    return mse.detach(), g


def run_adam(obj, state, phase: AdamPhase, bar: Progress):
    """`phase.steps` Adam steps from state.params on the objective `obj`; returns the
    parameters (detached). state.params is left as it was."""
    p = state.params
    if phase.steps <= 0:
        return p
    flat, opt = phase.start(p)
    for step in range(phase.steps):
        for event in phase.events:
            new = event.before_step(obj, state, flat.params, step, phase.steps)
            if new is not None:
                flat, opt = phase.start(new)     # fresh moments for the new set
                break
        mse, g = gradients(obj, state, phase, flat, (phase.label, step, phase.steps))
        opt.step(g, lr_factor(step, phase.steps, phase.final_fraction))
        obj.clamp(flat.params)
        # The loss stays on the device: the bar reads it only when it redraws.
        bar.update(phase.label, mse)
        every = phase.record_every
        if every and (step % every == 0 or step == phase.steps - 1):
            state.history.append((phase.label, step + 1, float(mse)))
    return flat.params.detach()
