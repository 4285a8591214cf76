"""Waves (format version 5): the renderers' cosine, the wave term in the numpy and torch
renderers, the compiled kernel's backend with waves and the Triton backend that refuses them,
scaling, and the decoder's rendering of files with waves (spec/gsi-format.md sections 9 and
10; the kernel's waves in detail: tests/test_kernel_waves.py)."""
from __future__ import annotations

import importlib
import math
import pathlib
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gscodec
import gscodec.render as R
from gscodec.bitstream import format as gsi
from gscodec.bitstream.model import QuantClass, QuantizedGaussians, conics_from_scale_rot
from gscodec.render import kernel as cpu_backend
from gscodec.render.numpy_reference import cos_gsi, render_numpy_ref

import gsi_reference_decoder as ref
import gsi_reference_render as spec_render

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
WAVES_VECTOR = VECTORS / "waves_rgb_40x32_56.gsi"


def waved_gaussians(n, height, width, channels=3, seed=0, share=0.6):
    """float32 numpy (means, conics, colors, waves): random Gaussians (sigma 0.5 to 12
    pixels), about `share` of them with a wave of 0.05 to 2.5 radians per pixel, random
    phase and amplitude 0.1 to 3 (either sign of the wave vector); the others (0, 0, 0, 0)."""
    rng = np.random.default_rng(seed)
    means = (rng.random((n, 2)) * [width, height]).astype(np.float32)
    sigma = np.sort(np.exp(rng.uniform(math.log(0.5), math.log(12.0), (n, 2))), axis=1)[:, ::-1]
    theta = rng.random(n) * math.pi
    conics = conics_from_scale_rot(np.ascontiguousarray(sigma), theta).astype(np.float32)
    colors = (rng.random((n, channels)) * 0.3).astype(np.float32)
    ang = rng.random(n) * 2 * math.pi
    mag = rng.uniform(0.05, 2.5, n)
    waves = np.stack([mag * np.cos(ang), mag * np.sin(ang), rng.random(n) * 2 * math.pi,
                      rng.uniform(0.1, 3.0, n)], 1)
    waves[rng.random(n) >= share] = 0.0
    return means, conics, colors, waves.astype(np.float32)


# ---- cos_gsi ----------------------------------------------------------------------------------
def test_cos_gsi_accuracy_and_range():
    x = np.linspace(-80, 80, 400_001, dtype=np.float32)
    err = np.abs(cos_gsi(x).astype(np.float64) - np.cos(x.astype(np.float64)))
    # measured 1.70e-7 here, 1.78e-7 on 2e7 points (spec 10: about 1.8e-7); bound 2e-7
    assert err.max() < 2e-7
    assert cos_gsi(x).dtype == np.float32
    # every finite float32 gives a finite value in [-1, 1] (the clamp keeps n a whole number)
    big = np.array([4194303.0, 4194304.0, -4194305.0, 3e7, -1e30, 3.4e38, -3.4e38, 0.0, -0.0],
                   np.float32)
    out = cos_gsi(big)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)
    assert np.array_equal(cos_gsi(big[5:7]), cos_gsi(np.float32([4194304.0, -4194304.0])))


def test_cos_gsi_matches_the_spec_bit_for_bit():
    """The reference renderer's cos_gsi (written from spec 10.3) and gscodec's agree on
    every bit: near the range-reduction boundaries, far out, and at random."""
    rng = np.random.default_rng(3)
    halves = (np.arange(-40, 41) + 0.5) * math.pi
    x = np.concatenate([rng.uniform(-100, 100, 3000), rng.uniform(-5e6, 5e6, 500), halves,
                        np.nextafter(halves.astype(np.float32), np.float32(np.inf)),
                        [0.0, 1e-30, -1e-45, 4194304.5, 1e9]]).astype(np.float32)
    got = cos_gsi(x)
    want = spec_render.cos_gsi(x)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# ---- the wave term in the renderers -------------------------------------------------------------
def test_amplitude_zero_is_bit_identical_to_no_wave():
    m, q, c, w = waved_gaussians(300, 40, 56, seed=1)
    w[:, 3] = 0.0                            # wave vectors and phases stay, amplitudes 0
    plain = render_numpy_ref(m, q, c, 40, 56)
    assert np.array_equal(render_numpy_ref(m, q, c, 40, 56, w), plain)
    assert np.array_equal(R.render_numpy(m, q, c, 40, 56, waves=w),
                          R.render_numpy(m, q, c, 40, 56))
    t = [torch.from_numpy(a) for a in (m, q, c, w)]
    base = R.render(*t[:3], 40, 56, backend="torch_reference")
    assert torch.equal(R.render(*t[:3], 40, 56, backend="torch_reference", waves=t[3]), base)


def test_numpy_and_torch_renderers_agree_on_waves():
    """numpy (exact: cos_gsi, fast_exp) against torch (torch.cos, torch.exp), and the
    waves change the image."""
    worst = 0.0
    for seed in range(3):
        m, q, c, w = waved_gaussians(400, 48, 64, seed=seed)
        a = render_numpy_ref(m, q, c, 48, 64, w)
        b = R.render(*(torch.from_numpy(x) for x in (m, q, c)), 48, 64, backend="torch_reference",
                     waves=torch.from_numpy(w)).numpy()
        worst = max(worst, float(np.abs(a - b).max() / max(1.0, np.abs(a).max())))
        assert np.abs(a - render_numpy_ref(m, q, c, 48, 64)).max() > 0.1
    # measured 1.1e-7 .. 1.9e-7 of the peak over seeds 0-9, 1 and 2 threads; bound 1e-6
    assert worst < 1e-6, worst


def test_torch_wave_gradients_float64():
    m, q, c, w = waved_gaussians(6, 9, 11, seed=4, share=1.0)
    m = torch.from_numpy(m).double()
    q = torch.from_numpy(q).double()
    c = torch.from_numpy(c).double()
    w = torch.from_numpy(w).double()
    w[2, 3] = 0.0                            # amplitude 0 still gets d/d amp
    w.requires_grad_(True)
    m.requires_grad_(True)

    def f(means, waves):
        return R.render(means, q, c, 9, 11, backend="torch_reference", waves=waves)

    assert torch.autograd.gradcheck(f, (m, w), eps=1e-6, atol=1e-5)
    (g,) = torch.autograd.grad(f(m, w).sum(), w)
    assert g[2, 3] != 0 and torch.all(g[2, :3] == 0)      # d/dk, d/dphase carry the amp


def test_non_finite_wave_contributes_nothing():
    m, q, c, w = waved_gaussians(5, 12, 12, seed=5, share=1.0)
    w[1, 0] = np.inf
    w[3, 1] = np.nan
    keep = [0, 2, 4]
    assert np.array_equal(render_numpy_ref(m, q, c, 12, 12, w),
                          render_numpy_ref(m[keep], q[keep], c[keep], 12, 12, w[keep]))
    out = R.render(*(torch.from_numpy(x) for x in (m, q, c)), 12, 12, backend="torch_reference",
                   waves=torch.from_numpy(w))
    assert torch.isfinite(out).all()


# ---- backends, dispatch -----------------------------------------------------------------------
def test_kernel_draws_waves_and_triton_refuses_them():
    m, q, c, w = (torch.from_numpy(a) for a in waved_gaussians(20, 16, 16, seed=6))
    if cpu_backend.kernel_available():
        # the kernel's render is the numpy renderer's, bit for bit
        want = render_numpy_ref(*(a.numpy() for a in (m, q, c)), 16, 16, w.numpy())
        assert np.array_equal(R.render(m, q, c, 16, 16, backend="kernel", waves=w).numpy(),
                              want)
        # waves that change nothing: no wave; a fit's waves at amplitude 0 get d/d amp
        z = w.clone()
        z[:, 3] = 0
        assert torch.equal(R.render(m, q, c, 16, 16, backend="kernel", waves=z),
                           R.render(m, q, c, 16, 16, backend="kernel"))
        z.requires_grad_(True)
        R.render(m, q, c, 16, 16, backend="kernel", waves=z).square().sum().backward()
        assert z.grad[:, 3].abs().max() > 0 and not z.grad[:, :3].any()
    pytest.importorskip("triton")
    from gscodec.render import triton as tb
    for call in (lambda: tb.render(m, q, c, 16, 16, waves=w),
                 lambda: tb.color_operator(m, q, 16, 16, waves=w),
                 lambda: tb.render_window(*(a.numpy() for a in (m, q, c)), 0, 0, 16, 16,
                                          waves=w.numpy())):
        with pytest.raises(NotImplementedError, match="'triton' does not draw waves"):
            call()


def test_auto_backend_and_colour_operator_draw_waves():
    m, q, c, w = (torch.from_numpy(a) for a in waved_gaussians(60, 20, 24, seed=7))
    auto = "kernel" if cpu_backend.kernel_available() else "torch_reference"
    assert R.resolve_backend("auto", m, w) == auto
    ref_img = R.render(m, q, c, 20, 24, backend="torch_reference", waves=w)
    assert torch.equal(R.render(m, q, c, 20, 24, waves=w),
                       R.render(m, q, c, 20, 24, backend=auto, waves=w))
    assert torch.allclose(R.render(m, q, c, 20, 24, waves=w), ref_img, atol=1e-6)
    op = R.color_operator(m, q, 20, 24, waves=w)
    assert torch.allclose(op.forward(c), ref_img, atol=1e-6)
    v = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(0))
    # adjoint: <A c, v> == <c, A^T v>
    assert torch.allclose((op.forward(c) * v).sum(), (c * op.adjoint(v)).sum(), rtol=1e-5)


def test_waves_for_view():
    w = np.array([[1.5, -0.25, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0], [3.0, 7.0, 0.1, -1.0]],
                 np.float32)
    for s in (1.0, 2.0, 0.37, 1 / 64):
        out = R.waves_for_view(w, s)
        assert out.dtype == np.float32
        assert np.array_equal(out[:, :2], w[:, :2] / np.float32(s))      # float32 division
        assert np.array_equal(out[:, 2:], w[:, 2:])
        m, q, wv = R.transform_for_view(np.zeros((3, 2), np.float32),
                                        np.ones((3, 3), np.float32), s, (3.0, 4.0), waves=w)
        assert np.array_equal(wv, out)
        t = R.waves_for_view(torch.from_numpy(w), s)
        assert np.array_equal(t.numpy(), out)
    assert R.waves_for_view(None, 2.0) is None
    assert np.array_equal(R.waves_for_view(w, 1.0), w)


# ---- integers -> waves -> decoder --------------------------------------------------------------
def test_wave_vectors_dequantization():
    """spec 9: k along the major axis (axis 0) or the minor one (axis 1), omega radians per
    standard deviation, phase 2 pi p / P, amplitude amp / wave_den."""
    qc = QuantClass(2, 8, 8, 64, rot_bias=127, wave_den=4, wave_freqs=8, wave_f0=-2,
                    wave_phases=8)
    # sigma (4, 1) (log-scales 16, 0 at 8 steps per octave), theta = pi/4 (rot 2 of 8)
    qg = QuantizedGaussians(16, 16, 1, [[8, 8]] * 3, [[16, 0]] * 3, [2, 2, 2],
                            [[64]] * 3, classes=(qc,), cls=[0, 0, 0],
                            wave=[[4, 0, 6, 2], [10, 1, 2, 4], [0, 1, 5, 7]])
    k = qg.wave_vectors()
    r = math.sqrt(0.5)
    # omega 2^((-2 + 6) / 2) = 4 per sigma_major = 4; 2^((-2 + 2) / 2) = 1 per sigma_minor
    np.testing.assert_allclose(k[0], [r, r, math.pi / 2, 1.0], rtol=1e-15)
    np.testing.assert_allclose(k[1], [-r, r, math.pi, 2.5], rtol=1e-15)
    assert k[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert np.array_equal(qg.render_waves(), k.astype(np.float32))
    qg.wave[:, 0] = 0
    assert qg.render_waves() is None


def test_reference_wave_inputs_are_gscodecs():
    """The reference renderer's binary32 waves (spec 9, 10.1) are gscodec's bit for bit
    (its pixels, waves included, are gscodec's: tests/test_render_spec.py)."""
    for path in sorted(VECTORS.glob("*.gsi")):
        data = path.read_bytes()
        want = spec_render.waves(ref.decode(data))
        got = gsi.read(data).render_waves()
        if got is None:
            assert not want.any(), path.name
        else:
            assert got.tobytes() == want.tobytes(), path.name


def test_decoder_draws_waves_with_the_kernel(monkeypatch):
    """A file with waves decodes with the compiled kernel (where built) to the numpy
    renderer's bytes, with no warning; with the numpy fallback to the same bytes."""
    data = WAVES_VECTOR.read_bytes()
    qg = gsi.read(data)
    assert qg.has_waves()
    m, q, c = qg.render_inputs()
    want = R.to_uint8_numpy(render_numpy_ref(m, q, c, qg.height, qg.width, qg.render_waves()))
    import gscodec.render.numpy_reference as npref
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("error")
        if cpu_backend.kernel_available():
            def no_numpy(*args, **kwargs):
                raise AssertionError("the numpy renderer was used where the kernel is built")
            patch.setattr(npref, "render_numpy_ref", no_numpy)
            patch.setattr(npref, "render_window", no_numpy)
        assert np.array_equal(gscodec.decode(data), want)
    from gscodec.render import backends
    monkeypatch.setattr(backends, "_warned", set())      # its one-time warning stays here
    monkeypatch.setenv("GSCODEC_NO_KERNEL", "1")
    R.refresh()              # availability is cached: ask again after the change
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # the fallback's one-time warning
            assert np.array_equal(gscodec.decode(data), want)
    finally:
        monkeypatch.delenv("GSCODEC_NO_KERNEL")
        R.refresh()
    # a GPU decode of a file with waves renders on the CPU (the Triton backend has none)
    import gscodec.decoder as dec

    def no_gpu(*args, **kwargs):
        raise AssertionError("the GPU path was taken for a file with waves")

    monkeypatch.setattr(dec, "resolve_device", lambda device, **kw: "cuda")
    monkeypatch.setattr(backends, "module", lambda name: (
        SimpleNamespace(render_window=no_gpu) if name == "triton"
        else importlib.import_module(f"gscodec.render.{name}")))
    assert np.array_equal(dec.decode(data, device="cuda"), want)
    # scaled and cropped: the same Gaussians and waves seen at scale 2
    big = gscodec.decode(data, scale=2.0, device="cpu")
    mm, qq, ww = R.transform_for_view(m, q, 2.0, waves=qg.render_waves())
    assert np.array_equal(big, R.to_uint8_numpy(render_numpy_ref(mm, qq, c, 64, 80, ww)))
    crop = gscodec.decode(data, scale=2.0, crop=(10, 7, 30, 20), device="cpu")
    assert np.abs(crop.astype(int) - big[7:27, 10:40].astype(int)).max() <= 1


def test_files_without_waves_still_use_the_kernel(monkeypatch):
    """A version-5 file without waves renders exactly as before (the kernel path)."""
    data = (VECTORS / "angles_rgb_32x24_60.gsi").read_bytes()
    assert gsi.read(data).render_waves() is None
    import gscodec.render.numpy_reference as npref

    def no_numpy(*args, **kwargs):
        raise AssertionError("the numpy renderer was used for a file without waves")

    if cpu_backend.kernel_available():
        monkeypatch.setattr(npref, "render_numpy_ref", no_numpy)
        monkeypatch.setattr(npref, "render_window", no_numpy)
        assert gscodec.decode(data).shape == (24, 32, 3)


def test_decoding_waves_never_imports_torch():
    code = ("import sys, gscodec; gscodec.decode(open(sys.argv[1], 'rb').read(), scale=0.5);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(WAVES_VECTOR)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"
