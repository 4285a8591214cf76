"""The encoder's one Adam loop (`run_adam`): every gradient phase of the pipeline (the free
fit, the quantization-aware fit, the re-fits of the progressive rounding) is an `AdamPhase`
run through it; what happens between steps (refinements, colour re-solves) is a strategy
passed in `events` (`refine.py`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import FIT_ATTRIBUTES
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
    lrs: tuple                    # ((attribute, base step), ...)
    scale: float
    beta2: float
    final_fraction: float
    free: tuple = FIT_ATTRIBUTES
    quantized: bool = False
    events: tuple = ()
    record_every: int = 0

    def optimizer(self, p) -> Adam:
        """Adam over the attributes of p named in `free`."""
        lrs = dict(self.lrs)
        groups = []
        for name in self.free:
            t = getattr(p, name)
            if t is None:           # (a set without waves)
                continue
            t.requires_grad_(True)
            lr = lrs[name]
            if isinstance(lr, tuple):
                lr = torch.tensor(lr, dtype=t.dtype, device=t.device)
            groups.append((t, lr * self.scale))
        return Adam(groups, betas=(0.9, self.beta2))


def run_adam(obj, state, phase: AdamPhase, bar: Progress):
    """`phase.steps` Adam steps from state.params on the objective `obj`; returns the
    parameters (detached). state.params is left as it was."""
    p = state.params
    if phase.steps <= 0:
        return p
    opt = phase.optimizer(p)
    for step in range(phase.steps):
        for event in phase.events:
            new = event.before_step(obj, state, p, step, phase.steps)
            if new is not None:
                p = new
                opt = phase.optimizer(p)     # fresh moments for the new set
                break
        f = lr_factor(step, phase.steps, phase.final_fraction)
        opt.lr = [lr * f for lr in opt.base_lr]
        view = fake_quantize(p, state.quant, obj.w, obj.h, state.cls) if phase.quantized else p
        mse, loss = obj.loss(view, (phase.label, step, phase.steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.clamp(p)
        # The loss stays on the device: the bar reads it only when it redraws.
        bar.update(phase.label, mse.detach())
        every = phase.record_every
        if every and (step % every == 0 or step == phase.steps - 1):
            state.history.append((phase.label, step + 1, float(mse.detach())))
    return p.detach()
