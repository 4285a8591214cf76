"""spec/gsi-format.md section 10 fixes the decoded pixels to the bit: a renderer written from
the spec alone (gsi_reference_render.py, on gsi_reference_decoder.py's integers) gives
gscodec's bytes on every test vector, scaled and cropped too; and the spec's binary32 inputs
are gscodec's."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import gscodec
from gscodec.render import kernel

import gsi_reference_decoder as ref
import gsi_reference_render as spec_render
from render_cases import needles

HERE = pathlib.Path(__file__).resolve().parent / "vectors"
VECTORS = sorted(HERE.glob("*.gsi"))
BIG = 256 * 256          # above this many pixels only some rows are compared


def _views(name, d):
    """(scale, crop, rows) to compare: the whole image, scaled up and down, and crops; for
    the 16384x16384 vectors rows around strip boundaries of the whole image (every pixel is
    independent; that 512 MB decode once, the v2/v3 copies of the vector decode the same
    Gaussians) and crops."""
    w, h = d["width"], d["height"]
    if w * h <= BIG:
        return [(1.0, None, None), (1.7, None, None), (0.5, None, None),
                (3.0, (1, 1, 2, 2), None), (1.0, (w // 3, h // 4, w - w // 3, h - h // 4), None)]
    rows = [0, 1, 511, 512, 513, 1023, 1024, 8191, 8192, 8193, h - 2, h - 1]
    whole = [(1.0, None, rows)] if name == "extreme_la_16384" else []
    return whole + [(1 / 64, None, None),
                    (1.0, (8000, 8100, 64, 600), None),       # a crop over two strips
                    (0.75, (100, 11000, 300, 40), None)]


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_spec_renderer_gives_the_decoders_bytes(path):
    data = path.read_bytes()
    d = ref.decode(data)
    qg = gscodec.read(data)
    for got, want in zip(spec_render.gaussians(d), qg.render_inputs(), strict=True):
        assert got.dtype == want.dtype == np.float32
        assert got.tobytes() == want.tobytes()               # spec 10.1, bit for bit
    for scale, crop, rows in _views(path.stem, d):
        pix = gscodec.decode(data, device="cpu", scale=scale, crop=crop)
        pix = pix.reshape(pix.shape[0], pix.shape[1], -1)
        mine = spec_render.render(d, scale=scale, crop=crop, rows=rows)
        sel = slice(None) if rows is None else rows
        assert mine.shape == pix.shape
        bad = int((mine[sel] != pix[sel]).sum())
        assert bad == 0, (path.name, scale, crop, bad)


def test_spec_renderer_row_spans_and_sums():
    """Needle-thin Gaussians (float32 q <= 12 outside their row spans) and a dense set with
    signed colours: the spec's float32 sums are the kernel's, bit for bit."""
    from render_cases import case
    for m, q, c, h, w in [(*[t.numpy() for t in needles(24, 32, 3)], 24, 32),
                          (*[t.numpy() for t in case(300, 37, 23, 3, 0)], 37, 23)]:
        c = c - np.float32(0.1)
        want = kernel.render_numpy(m, q, c, h, w)
        got = spec_render.render_strip(m, q, c, h, w, list(range(h)))
        assert got.tobytes() == want.tobytes()


def test_spec_fast_exp_is_the_kernels():
    ext = kernel.kernel()
    if ext is None:
        pytest.skip("compiled CPU kernel unavailable")
    from gscodec.render.numpy_reference import fast_exp
    x = np.concatenate([np.linspace(-100, 100, 20001, dtype=np.float32),
                        np.random.default_rng(0).uniform(-6, 0, 20000).astype(np.float32)])
    assert spec_render.fast_exp(x).tobytes() == fast_exp(x).tobytes()
