"""The compiled CPU kernel as a differentiable torch backend ("cpu"), for the encoder.

Tensors are passed to the numpy kernel as zero-copy views (when already float32 and
contiguous) and results come back with torch.from_numpy. The kernel runs on
torch.get_num_threads() threads, so torch.set_num_threads bounds it too.
"""
from __future__ import annotations

import torch

from . import cpu


def _np(t: torch.Tensor):
    return t.detach().to(torch.float32).contiguous().numpy()


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, conics, colors, height, width):
        ext = cpu.kernel()
        m = means.detach().to(torch.float32).contiguous()
        q = conics.detach().to(torch.float32).contiguous()
        c = colors.detach().to(torch.float32).contiguous()
        ctx.save_for_backward(m, q, c)
        ctx.dtypes = (means.dtype, conics.dtype, colors.dtype)
        out = ext.forward(m.numpy(), q.numpy(), c.numpy(), int(height), int(width),
                          torch.get_num_threads())
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):
        m, q, c = ctx.saved_tensors
        gm, gq, gc = cpu.kernel().backward(m.numpy(), q.numpy(), c.numpy(), _np(grad_out),
                                           torch.get_num_threads())
        dm, dq, dc = ctx.dtypes
        return (torch.from_numpy(gm).to(dm) if ctx.needs_input_grad[0] else None,
                torch.from_numpy(gq).to(dq) if ctx.needs_input_grad[1] else None,
                torch.from_numpy(gc).to(dc) if ctx.needs_input_grad[2] else None, None, None)


def render_cpu(means: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
               height: int, width: int) -> torch.Tensor:
    """Render with the compiled kernel: [height, width, C] float32, differentiable."""
    if cpu.kernel() is None:
        raise RuntimeError(f"CPU raster kernel unavailable: {cpu.unavailable_reason()}")
    for name, t in (("means", means), ("conics", conics), ("colors", colors)):
        if t.device.type != "cpu":
            raise ValueError(f"render backend 'cpu' needs CPU tensors, {name} is on {t.device}")
    cpu.check_shapes(means.shape, conics.shape, colors.shape)
    return _RasterizeCPU.apply(means, conics, colors, int(height), int(width))
