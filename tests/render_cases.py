"""Gaussian sets shared by the render tests (test_render, test_kernel, test_cuda_backend,
test_render_spec): random fitted-looking sets and the hard cases."""
from __future__ import annotations

import math

import numpy as np
import torch

from gscodec.bitstream.model import conics_from_scale_rot
from gscodec.render import Q_CUT


def random_gaussians(n, height, width, channels=3, seed=0, smin=0.3, smax=30.0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([float(width), float(height)])
    log_sig = torch.empty(n, 2, dtype=torch.float64).uniform_(
        math.log(smin), math.log(smax), generator=g)
    sigma = torch.exp(log_sig).sort(dim=1, descending=True).values
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    conics = conics_from_scale_rot(sigma, theta).float()
    colors = torch.rand(n, channels, generator=g) * 0.3
    return means, conics, colors


def gauss(sig_major, sig_minor, theta):
    """The float32 conic of one Gaussian."""
    return conics_from_scale_rot(torch.tensor([[sig_major, sig_minor]], dtype=torch.float64),
                                 torch.tensor([theta], dtype=torch.float64)).float()[0]


def degenerate_gaussians(height, width, channels, seed=1):
    """A mix of hard cases: very thin, enormous, far off the image, non-PD, on the border."""
    g = torch.Generator().manual_seed(seed)
    m, q, c = [], [], []

    def add(mean, sigma, theta, color=None):
        m.append(torch.tensor(mean, dtype=torch.float32))
        q.append(gauss(sigma[0], sigma[1], theta))
        c.append(torch.rand(channels, generator=g) * 0.3 if color is None
                 else torch.tensor(color, dtype=torch.float32))

    for k in range(6):  # very thin at various angles
        add([width * (k + 0.5) / 6, height / 2], [20.0, 0.05], k * math.pi / 6)
    add([width / 2, height / 2], [1e4, 5e3], 0.3)                 # covers everything
    add([-3e4, height / 2], [2e4, 2e4], 0.0)                        # huge, centred far off
    add([1e7, -1e7], [3.0, 2.0], 0.1)                               # far off the image
    add([-40.0, -40.0], [10.0, 10.0], 0.0)                          # just off a corner
    add([0.0, 0.0], [2.0, 1.0], 0.7)                                # on a corner
    add([width, height], [0.125, 0.125], 0.0)                       # tiny on a corner
    add([width * 0.3, height * 0.7], [0.125, 0.125], 0.0)           # sub-pixel
    add([width * 0.5, height * 0.5], [3.0e4, 0.2], 1.1)             # long and thin
    means = torch.stack(m)
    conics = torch.stack(q)
    colors = torch.stack(c)
    # Non positive-definite conics: must contribute nothing.
    bad_q = torch.tensor([[-1.0, 0.0, 1.0], [1.0, 2.0, 1.0], [0.0, 0.0, 0.0],
                          [1.0, 0.0, -1.0], [1.0, 1.0, 1.0]])
    bad_m = torch.tensor([[width / 2, height / 2]]).repeat(5, 1)
    bad_c = torch.ones(5, channels)
    return (torch.cat([means, bad_m]), torch.cat([conics, bad_q]), torch.cat([colors, bad_c]))


def case(n, h, w, ch, seed):
    """n random Gaussians followed by the degenerate ones (the last five are not PD)."""
    means, conics, colors = random_gaussians(n, h, w, ch, seed=seed)
    dm, dq, dc = degenerate_gaussians(h, w, ch, seed=seed + 100)
    return torch.cat([means, dm]), torch.cat([conics, dq]), torch.cat([colors, dc])


def np_case(n, h, w, ch, seed):
    return [t.numpy() for t in case(n, h, w, ch, seed)]


# (sigma_major, sigma_minor, theta, distance of the mean along the axis): found by a random
# search as Gaussians whose float32 q is <= Q_CUT at pixels of a 32x24 image outside their
# float64 row spans (2 to 218 such pixels each).
NEEDLES = [(7230.915, 4.883255, 1.0816369, 24478.53), (7931.368, 3.989774, 0.7808670, 25455.17),
           (13732.73, 5.620551, 0.8599518, 44223.18), (11957.22, 5.414078, 0.6494373, 39492.66),
           (6575.308, 5.410672, 2.4232940, 22319.20)]


def needles(height, width, channels=1, seed=5):
    """Long, thin Gaussians centred far off the image with their axis through it, where
    the contract's float32 q is dominated by rounding: at some pixels a few pixels off the
    axis it comes out <= Q_CUT although the exact q is far above. The spec's float64 row
    spans decide which pixels they reach."""
    g = torch.Generator().manual_seed(seed)
    m, q = [], []
    for s1, s2, theta, dist in NEEDLES:
        cx, cy = width / 2, height / 2
        m.append(torch.tensor([cx - dist * math.cos(theta), cy - dist * math.sin(theta)]))
        q.append(gauss(s1, s2, theta))
    means, conics = torch.stack(m), torch.stack(q)
    colors = torch.rand(means.shape[0], channels, generator=g) * 0.2 + 0.05
    return means, conics, colors


def float32_support(means, conics, height, width):
    """[N, height, width] bool: where each Gaussian's float32 q (the contract's order) is
    <= Q_CUT, over the whole image (no row spans)."""
    py, px = np.meshgrid(np.arange(height, dtype=np.float32) + np.float32(0.5),
                         np.arange(width, dtype=np.float32) + np.float32(0.5), indexing="ij")
    out = []
    for (mx, my), (a, b, c) in zip(np.asarray(means), np.asarray(conics), strict=True):
        dx, dy = px - mx, py - my
        out.append((a * dx + (np.float32(2.0) * b) * dy) * dx + (c * dy) * dy
                   <= np.float32(Q_CUT))
    return np.stack(out)


def brute_force(means, conics, colors, height, width):
    """Dense evaluation of the contract (float32, same q evaluation order), no culling."""
    py, px = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    out = torch.zeros(height, width, colors.shape[1])
    for k in range(means.shape[0]):
        a, b, c = conics[k]
        if not (a > 0 and a * c - b * b > 0):
            continue
        dx = px - means[k, 0]
        dy = py - means[k, 1]
        q = (a * dx + (2.0 * b) * dy) * dx + (c * dy) * dy
        w = torch.where(q <= Q_CUT, torch.exp(-0.5 * q), torch.zeros_like(q))
        out += w[..., None] * colors[k]
    return out


def mixed_gaussians(n, height, width, channels, seed=0, specials=True):
    """n random Gaussians plus the hard cases: thin, huge, off-image, on the border,
    non-positive-definite and non-finite."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 2, generator=g) * torch.tensor([float(width), float(height)])
    log_sig = torch.empty(n, 2, dtype=torch.float64).uniform_(math.log(0.3), math.log(12.0),
                                                            generator=g)
    sigma = torch.exp(log_sig).sort(dim=1, descending=True).values
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    conics = conics_from_scale_rot(sigma, theta).float()
    ms, qs = [means], [conics]
    if specials:
        cx, cy = width / 2, height / 2
        extra = [
            ((cx, cy), gauss(25.0, 0.08, 0.6)),             # very thin, rotated
            ((cx + 0.3, cy), gauss(6.0, 0.02, 0.0)),        # thinner than a pixel
            ((cx, cy), gauss(3000.0, 2000.0, 0.3)),         # huge: covers every tile
            ((-40.0, cy), gauss(3.0, 2.0, 0.1)),            # off the image (left)
            ((cx, height + 1e6), gauss(5.0, 5.0, 0.0)),     # far off the image
            ((-4.0, -3.0), gauss(6.0, 2.0, 1.0)),           # straddles the corner
            ((width + 0.5, cy), gauss(4.0, 1.0, 0.0)),      # straddles the right border
            ((cx, cy), torch.tensor([-1.0, 0.0, 1.0])),     # a <= 0: not PD
            ((cx, cy), torch.tensor([1.0, 2.0, 1.0])),      # det < 0: not PD
            ((cx, cy), torch.tensor([1.0, 1.0, 1.0])),      # det == 0: not PD
            ((float("nan"), cy), gauss(3.0, 3.0, 0.0)),     # non-finite mean
            ((cx, float("inf")), gauss(3.0, 3.0, 0.0)),
            ((cx, cy), torch.tensor([float("inf"), 0.0, 1.0])),  # non-finite conic
            ((cx, cy), torch.tensor([1.0, float("nan"), 1.0])),
        ]
        ms.append(torch.tensor([e[0] for e in extra], dtype=torch.float32))
        qs.append(torch.stack([e[1] for e in extra]))
    means, conics = torch.cat(ms), torch.cat(qs)
    colors = torch.rand(means.shape[0], channels, generator=g) * 0.5 + 0.05
    return means, conics, colors


def near_cut_gaussians(k, seed):
    """Gaussians scaled so that q at some pixel centre is 12 up to rounding: the q <= Q_CUT
    decision there depends on the exact float32 evaluation order."""
    g = torch.Generator().manual_seed(seed)
    means, conics = [], []
    for _ in range(k):
        mean = torch.tensor([8.0, 8.0]) + torch.rand(2, generator=g) * 4.0
        sig = torch.exp(torch.rand(2, generator=g, dtype=torch.float64) * 1.5).sort(
            descending=True).values
        q = conics_from_scale_rot(sig[None], torch.rand(1, generator=g, dtype=torch.float64)
                                  * math.pi)[0]
        off = torch.randint(-4, 5, (2,), generator=g).double()
        d = torch.tensor([math.floor(mean[0]) + 0.5, math.floor(mean[1]) + 0.5],
                         dtype=torch.float64) + off - mean.double()
        qv = q[0] * d[0] ** 2 + 2 * q[1] * d[0] * d[1] + q[2] * d[1] ** 2
        if qv <= 1e-6:
            continue
        means.append(mean)
        conics.append((q * (Q_CUT / qv)).float())
    return torch.stack(means), torch.stack(conics)
