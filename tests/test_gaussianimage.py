"""Tests of profile 1 (`gaussianimage`): body round trips, robustness of unpack, agreement
with the independent reference decoder, conics, and the quantization-aware fine-tune."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gscodec.bitstream.gaussianimage import (
    GIGaussians,
    body_length,
    conics_from_cholesky_np,
    pack,
    unpack,
)
from gscodec.encoder.gi_finetune import cholesky_from_params, quantize_gaussianimage
from gscodec.errors import FormatError

import gsi_reference_gi as ref
from helpers import spots_image

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- generators -------------------------------------------------------------------------------
def finite_half_bits(rng, shape):
    """Random binary16 bit patterns that are finite (all exponents except 31)."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint32)
    exp = (bits >> 10) & 0x1F
    bits = np.where(exp == 31, bits & ~np.uint32(0x4000), bits)   # exponent 31 -> 15
    return bits.astype(np.uint16)


def unit_half_bits(rng, shape):
    """binary16 patterns of values in [-1, 1], including +-0, +-1 and subnormals."""
    kind = rng.integers(0, 4, size=shape)
    vals = np.where(kind == 0, rng.uniform(-1, 1, size=shape),
                    np.where(kind == 1, rng.choice([-1.0, 1.0, 0.0, -0.0], size=shape),
                             np.where(kind == 2, rng.uniform(-1e-6, 1e-6, size=shape),
                                      rng.uniform(-1, 1, size=shape) ** 7)))
    return vals.astype(np.float16).view(np.uint16)


def make_gi(rng, n=None, channels=None, k=None, width=None, height=None):
    n = int(rng.integers(0, 40)) if n is None else n
    c = int(rng.integers(1, 5)) if channels is None else channels
    k = int(rng.integers(1, 9)) if k is None else k
    kk = 1 << k
    lo = rng.normal(0, 10, 3).astype(np.float32)
    hi = lo + np.where(rng.random(3) < 0.2, 0, rng.exponential(20, 3)).astype(np.float32)
    return GIGaussians(
        int(width or rng.integers(1, 2000)), int(height or rng.integers(1, 2000)), c,
        xy_half=unit_half_bits(rng, (n, 2)),
        chol_q=rng.integers(0, 64, (n, 3)).astype(np.uint8),
        chol_min=lo, chol_max=np.maximum(hi, lo),
        codebooks=finite_half_bits(rng, (2, kk, c)),
        color_idx=rng.integers(0, kk, (n, 2)).astype(np.uint8))


def same(a: GIGaussians, b: GIGaussians):
    assert (a.width, a.height, a.channels) == (b.width, b.height, b.channels)
    for name in ("xy_half", "chol_q", "chol_min", "chol_max", "codebooks", "color_idx"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), name


def unpack_body(body, g):
    return unpack(body, 0, len(body), g.count, g.channels, g.width, g.height)


def ref_decode(body, g):
    return ref.decode(body, g.count, g.channels, g.width, g.height)


def assert_matches_reference(g, body):
    means, L, colours = g.dequantize()
    rm, rl, rc = ref_decode(body, g)
    assert len(rm) == g.count
    # Exact equality of float64 values (the spec fixes every operation).
    assert [tuple(map(float, r)) for r in means] == rm
    assert [tuple(map(float, r)) for r in L] == rl
    assert [tuple(map(float, r)) for r in colours] == rc


# ---- round trips ------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(seed):
    rng = np.random.default_rng(seed)
    g = make_gi(rng)
    body = pack(g)
    assert len(body) == body_length(g.count, g.channels, g.codebook_size)
    g2 = unpack_body(body, g)
    same(g, g2)
    assert pack(g2) == body
    # Inside a larger buffer, at an offset.
    buf = b"\xaa" * 7 + body + b"\x55" * 3
    same(g, unpack(buf, 7, 7 + len(body), g.count, g.channels, g.width, g.height))
    assert_matches_reference(g2, body)


@pytest.mark.parametrize("n,c,k", [(0, 1, 1), (1, 4, 8), (5, 3, 3), (8, 2, 2), (3, 3, 8)])
def test_body_length_and_bits_per_gaussian(n, c, k):
    g = make_gi(np.random.default_rng(n * 31 + c * 7 + k), n=n, channels=c, k=k)
    body = pack(g)
    kk = 1 << k
    assert len(body) == 25 + 4 * kk * c + 4 * n + math.ceil(n * (18 + 2 * k) / 8)
    bpg = g.bits_per_gaussian()
    assert (bpg["pos"], bpg["cov"], bpg["color"]) == (32, 18, 2 * k)
    d = max(n, 1)
    assert bpg["codebook"] == 2 * kk * c * 16 / d
    assert math.isclose(bpg["total"], 8 * len(body) / d)
    if n:   # with N = 0 only the shared parts are counted (divided by 1)
        assert math.isclose(sum(v for key, v in bpg.items() if key != "total"), bpg["total"])


def test_bit_layout_by_hand():
    """One Gaussian, K = 2, C = 1: check every byte against the spec."""
    g = GIGaussians(10, 20, 1,
                    xy_half=np.array([[0.5, -1.0]], np.float16).view(np.uint16),
                    chol_q=np.array([[63, 0, 42]], np.uint8),
                    chol_min=np.array([0.5, -2, 0.25], np.float32),
                    chol_max=np.array([8, 2, 4], np.float32),
                    codebooks=np.array([[[0.25], [0.5]], [[-0.125], [0.0]]],
                                       np.float16).view(np.uint16),
                    color_idx=np.array([[1, 0]], np.uint8))
    body = pack(g)
    import struct
    expect = bytes([1]) + struct.pack("<3f", 0.5, -2, 0.25) + struct.pack("<3f", 8, 2, 4)
    expect += struct.pack("<4e", 0.25, 0.5, -0.125, 0.0) + struct.pack("<2e", 0.5, -1.0)
    # bits: 111111 000000 101010 1 0 + 4 zero padding bits = 24 bits
    expect += bytes([0b11111100, 0b00001010, 0b10100000])
    assert body == expect
    means, L, col = unpack_body(body, g).dequantize()
    assert means.tolist() == [[7.5, 0.0]]
    assert L.tolist() == [[8.0, -2.0, 0.25 + 42 * (3.75 / 63)]]
    assert col.tolist() == [[0.5 - 0.125]]


# ---- robustness -------------------------------------------------------------------------------
def expect_format_error(body, g, **over):
    args = dict(n=g.count, channels=g.channels, width=g.width, height=g.height)
    args.update(over)
    with pytest.raises(FormatError):
        unpack(body, 0, len(body), **args)
    with pytest.raises(ref.ReferenceDecodeError):
        ref.decode(body, args["n"], args["channels"], args["width"], args["height"])


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 64))
def test_truncated_and_extended_bodies_rejected(seed, cut):
    rng = np.random.default_rng(seed)
    g = make_gi(rng)
    body = pack(g)
    expect_format_error(body[:max(0, len(body) - cut)], g)
    expect_format_error(body + bytes(cut), g)
    expect_format_error(body, g, n=g.count + 1)
    if g.count:
        expect_format_error(body, g, n=g.count - 1)


def corrupt_cases(g):
    """(name, body) pairs that violate exactly one check of spec section 5."""
    import struct
    body = bytearray(pack(g))
    c, kk, n = g.channels, g.codebook_size, g.count
    out = []
    for k in (0, 9, 255):
        b = bytearray(body)
        b[0] = k
        out.append(("k=%d" % k, b))
    for j in range(3):
        for val in (float("nan"), float("inf"), -float("inf")):
            b = bytearray(body)
            struct.pack_into("<f", b, 1 + 4 * j, val)
            out.append(("min nan/inf", b))
            b = bytearray(body)
            struct.pack_into("<f", b, 13 + 4 * j, val)
            out.append(("max nan/inf", b))
        b = bytearray(body)
        struct.pack_into("<f", b, 1 + 4 * j, 5.0)
        struct.pack_into("<f", b, 13 + 4 * j, 4.0)
        out.append(("min > max", b))
    for bits in (0x7C00, 0xFC00, 0x7E00, 0x7C01):
        b = bytearray(body)
        struct.pack_into("<H", b, 25 + 2 * (kk * c), bits)
        out.append(("codebook not finite", b))
    if n:
        off = 25 + 4 * kk * c
        for val in (1.0009765625, -1.5, 2.0, float("inf"), float("nan"), 65504.0):
            b = bytearray(body)
            struct.pack_into("<e", b, off + 2 * (n * 2 - 1), val)
            out.append(("position", b))
    k = g.index_bits
    if (n * (18 + 2 * k)) % 8:
        b = bytearray(body)
        b[-1] |= 1
        out.append(("padding", b))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_each_corruption_of_spec_section_5_is_rejected(seed):
    rng = np.random.default_rng(seed)
    g = make_gi(rng, n=[0, 1, 3, 7, 13, 5][seed], k=[1, 2, 3, 8, 5, 3][seed])
    for _, b in corrupt_cases(g):
        expect_format_error(bytes(b), g)


def test_bad_arguments_are_format_errors():
    g = make_gi(np.random.default_rng(3), n=4, channels=3, k=3)
    body = pack(g)
    for kw in (dict(channels=0), dict(channels=5), dict(n=-1), dict(width=0), dict(height=-3)):
        args = dict(n=4, channels=3, width=g.width, height=g.height)
        args.update(kw)
        with pytest.raises(FormatError):
            unpack(body, 0, len(body), **args)
    for start, end in ((0, len(body) + 1), (-1, len(body)), (5, 4), (0, 0)):
        with pytest.raises(FormatError):
            unpack(body, start, end, 4, 3, g.width, g.height)
    with pytest.raises(FormatError):
        unpack(b"", 0, 0, 0, 1, 1, 1)
    with pytest.raises(FormatError):
        unpack(body, 0, len(body), 4.0, 3, g.width, g.height)
    with pytest.raises(FormatError):
        unpack(list(body), 0, len(body), 4, 3, g.width, g.height)
    # numpy integers (as a container parser may hand over) and memoryviews are fine
    same(g, unpack(memoryview(body), np.int64(0), np.int32(len(body)), np.uint32(4),
                   np.int64(3), np.int64(g.width), g.height))


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                           min_size=1, max_size=6))
def test_corrupted_bodies_only_format_error(seed, edits):
    """Byte edits of a valid body: unpack either succeeds or raises FormatError, and it
    accepts exactly when the reference decoder does (then with the same values)."""
    rng = np.random.default_rng(seed)
    g = make_gi(rng)
    b = bytearray(pack(g))
    for pos, val in edits:
        b[pos % len(b)] = val
    b = bytes(b)
    try:
        g2 = unpack_body(b, g)
    except FormatError:
        with pytest.raises(ref.ReferenceDecodeError):
            ref_decode(b, g)
        return
    assert pack(g2) == b
    assert_matches_reference(g2, b)


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 30), st.integers(1, 4))
def test_random_bytes_only_format_error(data, n, c):
    try:
        g = unpack(data, 0, len(data), n, c, 17, 9)
    except FormatError:
        return
    assert pack(g) == data


# ---- conics -----------------------------------------------------------------------------------
def test_render_inputs_conics_positive_definite():
    rng = np.random.default_rng(0)
    n = 500
    L = np.stack([rng.uniform(0.2, 60, n) * rng.choice([-1, 1], n), rng.normal(0, 20, n),
                  rng.uniform(0.2, 60, n) * rng.choice([-1, 1], n)], -1)
    con = conics_from_cholesky_np(L)
    a, b, c = (con[:, i].astype(np.float32) for i in range(3))
    assert np.all(a > 0) and np.all(a * c - b * b > 0)
    # conic = (L L^T)^-1
    for i in range(0, n, 37):
        l11, l21, l22 = L[i]
        sig = np.array([[l11 * l11, l11 * l21], [l11 * l21, l21 * l21 + l22 * l22]])
        inv = np.array([[con[i, 0], con[i, 1]], [con[i, 1], con[i, 2]]])
        assert np.allclose(sig @ inv, np.eye(2), atol=1e-9)
        rc = ref.conic(tuple(L[i]))
        assert np.allclose(rc, con[i], rtol=0, atol=0)


def test_render_inputs_from_a_body():
    g = make_gi(np.random.default_rng(11), n=30, channels=3, k=4, width=64, height=48)
    g.chol_min[:] = [0.3, -3, 0.3]
    g.chol_max[:] = [9, 3, 9]
    means, conics, colors = unpack_body(pack(g), g).render_inputs()
    assert means.dtype == conics.dtype == colors.dtype == np.float32
    assert means.shape == (30, 2) and conics.shape == (30, 3) and colors.shape == (30, 3)
    a, b, c = conics.T
    assert np.all(a > 0) and np.all(a * c - b * b > 0)
    assert np.all((means[:, 0] >= 0) & (means[:, 0] <= 64))
    assert np.all((means[:, 1] >= 0) & (means[:, 1] <= 48))
    m64, L, col = g.dequantize()
    assert np.array_equal(means, m64.astype(np.float32))
    assert np.array_equal(colors, col.astype(np.float32))


def test_singular_or_huge_L_gets_zero_conic():
    L = np.array([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0], [-0.0, 0.0, 0.0], [1e-30, 0.0, 1.0],
                  [-2.0, 1.0, -3.0]])
    con = conics_from_cholesky_np(L)
    assert np.all(con[:4] == 0)
    assert con[4, 0] > 0 and con[4, 0] * con[4, 2] - con[4, 1] ** 2 > 0


def test_cholesky_from_params():
    from gscodec.encoder.params import GaussianParams
    ls = torch.tensor([[1.0, -0.5], [3.0, 3.0], [0.0, 2.0]])
    th = torch.tensor([0.3, 1.0, 2.5])
    p = GaussianParams(torch.zeros(3, 2), ls, th, torch.zeros(3, 1))
    L = cholesky_from_params(p).numpy()
    con = conics_from_cholesky_np(L)
    assert np.allclose(con, p.conics().double().numpy(), rtol=1e-5)


# ---- the fine-tune ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_fit():
    """(objective, free fit of 50 Gaussians without refinements, the generator's state
    after it): tests that draw from a generator start there."""
    from gscodec.encoder.config import FitConfig
    from gscodec.encoder.objective import Objective
    from gscodec.encoder.pipeline import Pipeline
    from gscodec.encoder.stages import EncodeState, FreeFit
    cfg = FitConfig(iterations=150, seed=0, refine_at=())
    f = Objective(spots_image(), cfg)
    state = EncodeState.new(f, cfg.seed)
    state.params = f.start(50, state.gen)
    Pipeline((FreeFit(cfg, 50),)).run(f, state)
    return f, state.params, state.gen.get_state()


def generator(state):
    g = torch.Generator()
    g.set_state(state)
    return g


def _psnr(f, means, conics, colors):
    from gscodec.render import render
    with torch.no_grad():
        out = render(means, conics, colors, f.h, f.w, backend=f.cfg.backend)
        mse = float(f.mse(out.clamp(0, 1)))
    return -10 * math.log10(mse)


def test_quantize_gaussianimage_small(small_fit, torch_threads):
    f, p, after_fit = small_fit
    gen = generator(after_fit)        # the codebook draws from it: same state every run
    free = _psnr(f, p.pos, p.conics(), p.color)
    results = {}
    for k, iters in ((8, 0), (8, 40), (256, 40)):
        g = quantize_gaussianimage(f, p, iters, gen, codebook_size=k)
        assert g.count == 50 and g.codebook_size == k and g.channels == 3
        body = pack(g)
        g2 = unpack_body(body, g)
        same(g, g2)
        results[k, iters] = _psnr(f, *(torch.from_numpy(a) for a in g2.render_inputs()))
    # Bounds from measurements, not one machine's figure. Measured (32x24, 50 Gaussians,
    # 150 free-fit steps) over image and fit seeds 0-4 at 1 and 2 torch threads (Intel,
    # identical at both counts; an AMD EPYC gave K=8 after 40 steps 35.90 at seed 0, this
    # machine 38.73: trajectories differ between CPUs about as much as between seeds):
    #   free fit             48.24 .. 52.85 dB            bound 44 (margin 4.2)
    #   K=256 below free      2.55 ..  4.17 dB            bound 6 (margin 1.8)
    #   K=256 above K=8      11.56 .. 15.14 dB (40 steps) bound 6 (margin 5.6)
    #   K=8 after 40 steps   30.39 .. 38.73 dB            bound 26 (margin 4.4)
    # The fine-tune is not asserted to gain: K=8 after 40 steps minus 0 steps measured
    # -0.35 .. +6.25 dB over seeds, and -2.6 dB at seed 0 with the generator in another
    # state (the codebook's k-means start draws from it).
    assert free > 44
    assert results[256, 40] > free - 6
    assert results[256, 40] > results[8, 40] + 6
    assert results[8, 40] > 26


def test_quantize_gaussianimage_deterministic(small_fit):
    f, p, _ = small_fit
    a = pack(quantize_gaussianimage(f, p, 5, torch.Generator().manual_seed(5)))
    b = pack(quantize_gaussianimage(f, p, 5, torch.Generator().manual_seed(5)))
    assert a == b


def test_quantize_gaussianimage_rejects_bad_codebook_size(small_fit):
    f, p, _ = small_fit
    with pytest.raises(ValueError):
        quantize_gaussianimage(f, p, 0, torch.Generator(), codebook_size=12)


def test_cholesky_quantizer_not_stretched_by_an_outlier(small_fit):
    """The 6-bit Cholesky quantizers start at quantiles, not at the extremes: one Gaussian
    with a far larger factor must not coarsen the others' codes (long fits leave a few such
    Gaussians; with min/max starts kodim23 lost 2.2 dB). The default leaves out 1 % at
    each end, none of 51; at 5 % two are left out."""
    from gscodec.encoder.gi_finetune import GIFineTuneConfig
    from gscodec.encoder.params import GaussianParams
    f, p, _ = small_fit
    # one thin Gaussian at 45 degrees, 1000 px long: its l21 is far outside the others'
    # (the fixture's own span of l21 is about 10; 200 px gave only 14x it)
    out = GaussianParams(torch.tensor([[5.0, 5.0]]), torch.tensor([[math.log2(1000.0), -1.0]]),
                         torch.tensor([math.pi / 4]), torch.zeros(1, 3))
    q = GaussianParams.cat(p.detach(), out)
    L = cholesky_from_params(q).float().numpy()
    g = quantize_gaussianimage(f, q, 0, torch.Generator().manual_seed(0))
    assert g.chol_max[0] >= L[-1, 0] - 1e-3      # a small set keeps its extremes
    g = quantize_gaussianimage(f, q, 0, torch.Generator().manual_seed(0),
                               cfg=GIFineTuneConfig(chol_init_quantile=0.05))
    lo, hi = g.chol_min.astype(np.float64), g.chol_max.astype(np.float64)
    step = (hi - lo) / 63
    span_others = L[:-1].max(0) - L[:-1].min(0)
    assert abs(L[-1, 1]) > 20 * span_others[1]          # the outlier really is one
    assert np.all(step <= span_others / 63 + 1e-6)        # range from the others alone
    Lq = lo + g.chol_q.astype(np.float64) * step
    inside = np.all((L[:-1] >= lo) & (L[:-1] <= hi), axis=1)
    # m = floor(0.05 * 50) = 2 left out at each end of each of the 3 elements: at most
    # 3 * 4 of the others outside
    assert inside.sum() >= 50 - 12
    assert np.all(np.abs(Lq[:-1][inside] - L[:-1][inside]) <= step / 2 + 1e-5)
