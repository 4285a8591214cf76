"""`--tune ssim`: the MS-SSIM of the loss (encoder/msssim.py) and the objective that mixes
it in (objective.SSIMObjective), through the library and the command line."""
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import gscodec
from gscodec.encoder.api import fit_config
from gscodec.encoder.msssim import MSSSIMTo, ms_ssim, scales_for
from gscodec.encoder.objective import Objective, SSIMObjective
from gscodec.encoder.quantize import to_integers
from gscodec.encoder.refine import ColorResolves
from gscodec.encoder.stages import Colours, EncodeState, FreeFit, RoundGeometry
from gscodec.errors import InputError

from helpers import blobs_image, waves_image


def _pair(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(h, w, 3, generator=g)
    b = (a + 0.1 * torch.randn(h, w, 3, generator=g)).clamp(0, 1)
    return a, b


def test_ms_ssim_is_the_benchmarks_metric():
    pm = pytest.importorskip("pytorch_msssim")
    a, b = _pair(170, 200)
    nchw = (a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None])
    ref = float(pm.ms_ssim(*nchw, data_range=1.0))
    assert float(ms_ssim(a, b)) == pytest.approx(ref, abs=1e-6)
    assert float(MSSSIMTo(nchw[0])(nchw[1])) == pytest.approx(ref, abs=1e-6)
    # One scale is SSIM.
    assert float(ms_ssim(a, b, scales=1)) == pytest.approx(
        float(pm.ssim(*nchw, data_range=1.0)), abs=1e-6)


def test_target_side_computed_once_gives_the_same_value_and_gradient():
    a, b = _pair(100, 90, seed=1)
    nchw = a.permute(2, 0, 1)[None]
    for scales, first in ((3, 0), (2, 1)):
        x1 = b.permute(2, 0, 1)[None].clone().requires_grad_(True)
        x2 = x1.detach().clone().requires_grad_(True)
        v1 = ms_ssim(x1, nchw, scales=scales, first=first)
        v2 = MSSSIMTo(nchw, scales=scales, first=first)(x2)
        v1.backward()
        v2.backward()
        assert float(v1.detach()) == pytest.approx(float(v2.detach()), abs=1e-6)
        assert torch.allclose(x1.grad, x2.grad, atol=1e-7)


def test_scales_shrink_with_the_image():
    # Five scales from pytorch-msssim's 161 px; then the coarsest scale keeps a side > 10.
    assert [scales_for(s, 500) for s in (161, 160, 81, 80, 41, 21, 11, 10)] == \
        [5, 4, 4, 3, 3, 2, 1, 0]
    a, _ = _pair(30, 40)
    assert float(ms_ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="no MS-SSIM"):
        ms_ssim(a, a, scales=3)


def test_ssim_objective_pools_large_images_and_falls_back_on_small_ones():
    cfg = fit_config(tune="ssim")
    big = SSIMObjective(blobs_image(170, 200, 3), cfg)
    assert big.pool == 2 and len(big.ms_ssim.levels) == 4      # MS-SSIM without scale 1
    small = SSIMObjective(blobs_image(64, 96, 3), cfg)
    assert small.pool == 1 and len(small.ms_ssim.levels) == 3  # fewer scales, unpooled
    assert SSIMObjective(blobs_image(8, 8, 3), cfg).ms_ssim is None   # no window fits
    steps = cfg.free_steps(100, 64 * 96)
    assert not small.uses_ssim(("fit", 0, steps)) and small.uses_ssim(("fit", steps - 1, steps))
    assert small.uses_ssim(("round", 0, 50))
    assert not SSIMObjective(blobs_image(64, 96, 3), replace(cfg, ssim_round=False)).uses_ssim(
        ("round", 0, 50))


@pytest.mark.parametrize("count, sparse", [(60, False), (30, True)])
def test_ssim_loss_is_the_mix_of_the_two_metrics_in_db(count, sparse):
    """The loss mixes log(MSE) and log(1 - MS-SSIM) with the weight of the set's density
    (60 Gaussians on 64x96 pixels: 9.8 per 1000, the dense weight; 30: 4.9, the sparse one)."""
    img = waves_image(64, 96)
    cfg = fit_config(tune="ssim")
    obj = SSIMObjective(img, cfg)
    p = obj.start(count, torch.Generator().manual_seed(0))
    assert p.count == count
    w = cfg.ssim_weight_sparse if sparse else cfg.ssim_weight
    assert cfg.ssim_weight_sparse != cfg.ssim_weight
    mse, loss = obj.loss(p, ("fit", 0, 10))           # before the term: the squared error
    assert float(loss) == pytest.approx((1 - w) * math.log(float(mse)), rel=1e-5)
    p.pos.requires_grad_(True)
    mse, loss = obj.loss(p, ("fit", 9, 10))
    with torch.no_grad():
        m = ms_ssim(obj.render(p), obj.target)
    assert float(loss) == pytest.approx((1 - w) * math.log(float(mse))
                                        + w * math.log(1 - float(m)), rel=1e-4)
    loss.backward()
    assert p.pos.grad is not None and float(p.pos.grad.abs().sum()) > 0


def test_tune_ssim_keeps_its_fitted_colours_where_least_squares_would_undo_them():
    """tune ssim: the free fit's colour re-solves stop where the term starts, the rounding
    re-fits once more with the angles on the grid, and the file's colours are the re-fitted
    ones rounded (no least-squares solve); tune psnr, fast (no re-fits) and
    ssim_ls_colors=True keep the least-squares colours."""
    img = waves_image(48, 64)
    cfg = fit_config(tune="ssim")
    assert not cfg.ls_colors() and cfg.resolve_until() == cfg.ssim_from
    for other in (fit_config(), fit_config(tune="ssim", effort="fast"),
                  replace(cfg, ssim_ls_colors=True)):
        assert other.ls_colors() and other.resolve_until() == other.color_solve_until
    rounds = len(RoundGeometry(fit_config(), 10).rounds())
    assert len(RoundGeometry(cfg, 10).rounds()) == rounds + 1
    resolves = [e for e in FreeFit(cfg, 10).phase(SSIMObjective(img, cfg)).events
                if isinstance(e, ColorResolves)]
    assert resolves[0].until == cfg.ssim_from

    # The file's colours: the fitted ones rounded under tune ssim, solved ones under psnr.
    for c, objective in ((cfg, SSIMObjective), (fit_config(), Objective)):
        obj = objective(img, c)
        state = EncodeState.new(obj, 0)
        state.params = obj.start(40, state.gen)
        state.ensure_quant(obj)
        fitted = to_integers(state.params, state.quant, obj.w, obj.h,
                             cls=state.cls.cpu().numpy()).color
        Colours(c).run(obj, state, None)
        assert np.array_equal(state.coded.color, fitted) == (c is cfg)


def test_tune_ssim_encodes_a_file_the_decoder_reads():
    img = blobs_image(40, 48, 3)
    data = gscodec.encode(img, gaussians=30, iterations=20, tune="ssim")
    assert gscodec.decode(data).shape == img.shape
    tiny = gscodec.encode(blobs_image(8, 8, 3), gaussians=4, iterations=5, tune="ssim")
    assert gscodec.decode(tiny).shape == (8, 8, 3)


def test_tune_options_are_checked():
    img = blobs_image(24, 32, 3)
    with pytest.raises(InputError, match="unknown tune"):
        gscodec.encode(img, gaussians=10, iterations=2, tune="vmaf")
    mask = np.zeros((24, 32), bool)
    mask[5:9, 5:9] = True
    with pytest.raises(InputError, match="tune ssim needs an image without a mask"):
        gscodec.encode(img, gaussians=10, iterations=2, tune="ssim", mask=mask)


def _gsi(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "gscodec", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_tune(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(blobs_image(24, 32, 3)).save(src)
    out = tmp_path / "x.gsi"
    r = _gsi("encode", src, "-o", out, "--gaussians", 20, "--iterations", 10, "--tune", "ssim",
             "--quiet")
    assert r.returncode == 0, r.stderr
    assert out.exists()
    r = _gsi("encode", src, "-o", tmp_path / "y.gsi", "--tune", "butteraugli")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    mask = tmp_path / "mask.png"
    m = np.zeros((24, 32), np.uint8)
    m[4:8, 4:8] = 255
    Image.fromarray(m).save(mask)
    r = _gsi("encode", src, "-o", tmp_path / "z.gsi", "--tune", "ssim", "--mask", mask,
             "--iterations", 2)
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "without a mask" in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "z.gsi").exists()
